# Least privilege with user-assigned managed identities. Custom roles name each action; none uses a wildcard.
#   worker:  read/write blobs in the container, mint user-delegation keys (presign), read the Redis secret,
#            delete instances of *its own* scale set (self-retire after idle).
#   control: read blobs in the container, mint user-delegation keys (presign), read the Redis secret,
#            read the scale set and change its capacity.

resource "azurerm_user_assigned_identity" "worker" {
  name                = "${var.name}-worker"
  location            = azurerm_resource_group.this.location
  resource_group_name = azurerm_resource_group.this.name
  tags                = local.tags
}

resource "azurerm_user_assigned_identity" "control" {
  name                = "${var.name}-control"
  location            = azurerm_resource_group.this.location
  resource_group_name = azurerm_resource_group.this.name
  tags                = local.tags
}

resource "azurerm_role_definition" "blob_writer" {
  name        = "${var.name}-blob-writer"
  scope       = azurerm_storage_account.objects.id
  description = "sdqueue workers: read, write and delete blobs (outputs, checkpoints)."
  permissions {
    actions = ["Microsoft.Storage/storageAccounts/blobServices/containers/read"]
    data_actions = [
      "Microsoft.Storage/storageAccounts/blobServices/containers/blobs/read",
      "Microsoft.Storage/storageAccounts/blobServices/containers/blobs/write",
      "Microsoft.Storage/storageAccounts/blobServices/containers/blobs/delete",
    ]
  }
  assignable_scopes = [azurerm_storage_account.objects.id]
}

resource "azurerm_role_definition" "blob_reader" {
  name        = "${var.name}-blob-reader"
  scope       = azurerm_storage_account.objects.id
  description = "sdqueue API: read blobs (presigned downloads act with the signer's rights)."
  permissions {
    actions      = ["Microsoft.Storage/storageAccounts/blobServices/containers/read"]
    data_actions = ["Microsoft.Storage/storageAccounts/blobServices/containers/blobs/read"]
  }
  assignable_scopes = [azurerm_storage_account.objects.id]
}

resource "azurerm_role_definition" "delegator" {
  name        = "${var.name}-sas-delegator"
  scope       = azurerm_storage_account.objects.id
  description = "sdqueue: obtain user-delegation keys to sign SAS URLs."
  permissions {
    actions = ["Microsoft.Storage/storageAccounts/blobServices/generateUserDelegationKey/action"]
  }
  assignable_scopes = [azurerm_storage_account.objects.id]
}

resource "azurerm_role_definition" "self_retire" {
  name        = "${var.name}-worker-self-retire"
  scope       = azurerm_linux_virtual_machine_scale_set.workers.id
  description = "sdqueue workers: delete an instance of the GPU scale set (its own, after idling)."
  permissions {
    actions = [
      "Microsoft.Compute/virtualMachineScaleSets/read",
      "Microsoft.Compute/virtualMachineScaleSets/delete/action",
      "Microsoft.Compute/virtualMachineScaleSets/virtualMachines/read",
      "Microsoft.Compute/virtualMachineScaleSets/virtualMachines/delete",
    ]
  }
  assignable_scopes = [azurerm_linux_virtual_machine_scale_set.workers.id]
}

resource "azurerm_role_definition" "scaler" {
  name        = "${var.name}-controller-scaler"
  scope       = azurerm_linux_virtual_machine_scale_set.workers.id
  description = "sdqueue controller: read the GPU scale set and raise its capacity."
  permissions {
    actions = [
      "Microsoft.Compute/virtualMachineScaleSets/read",
      "Microsoft.Compute/virtualMachineScaleSets/write",
    ]
  }
  assignable_scopes = [azurerm_linux_virtual_machine_scale_set.workers.id]
}

resource "azurerm_role_assignment" "worker_blobs" {
  scope              = azurerm_storage_container.objects.id
  role_definition_id = azurerm_role_definition.blob_writer.role_definition_resource_id
  principal_id       = azurerm_user_assigned_identity.worker.principal_id
}

resource "azurerm_role_assignment" "worker_delegator" {
  scope              = azurerm_storage_account.objects.id
  role_definition_id = azurerm_role_definition.delegator.role_definition_resource_id
  principal_id       = azurerm_user_assigned_identity.worker.principal_id
}

resource "azurerm_role_assignment" "worker_self_retire" {
  scope              = azurerm_linux_virtual_machine_scale_set.workers.id
  role_definition_id = azurerm_role_definition.self_retire.role_definition_resource_id
  principal_id       = azurerm_user_assigned_identity.worker.principal_id
}

resource "azurerm_role_assignment" "control_blobs" {
  scope              = azurerm_storage_container.objects.id
  role_definition_id = azurerm_role_definition.blob_reader.role_definition_resource_id
  principal_id       = azurerm_user_assigned_identity.control.principal_id
}

resource "azurerm_role_assignment" "control_delegator" {
  scope              = azurerm_storage_account.objects.id
  role_definition_id = azurerm_role_definition.delegator.role_definition_resource_id
  principal_id       = azurerm_user_assigned_identity.control.principal_id
}

resource "azurerm_role_assignment" "control_scaler" {
  scope              = azurerm_linux_virtual_machine_scale_set.workers.id
  role_definition_id = azurerm_role_definition.scaler.role_definition_resource_id
  principal_id       = azurerm_user_assigned_identity.control.principal_id
}

resource "azurerm_role_assignment" "redis_secret_readers" {
  for_each = {
    worker  = azurerm_user_assigned_identity.worker.principal_id
    control = azurerm_user_assigned_identity.control.principal_id
  }
  scope                = "${azurerm_key_vault.this.id}/secrets/${azurerm_key_vault_secret.redis_url.name}"
  role_definition_name = "Key Vault Secrets User"
  principal_id         = each.value
}
