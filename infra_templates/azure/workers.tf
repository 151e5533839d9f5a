# The Spot GPU scale set: 0 instances at creation, eviction policy Delete (an evicted VM is gone, not deallocated
# and billed for its disks). Only the controller raises capacity; only idle workers lower it by deleting themselves,
# so Terraform ignores `instances` after creation.

resource "azurerm_linux_virtual_machine_scale_set" "workers" {
  name                            = "${var.name}-gpu-workers"
  location                        = azurerm_resource_group.this.location
  resource_group_name             = azurerm_resource_group.this.name
  sku                             = var.worker_vm_size
  instances                       = 0
  priority                        = "Spot"
  eviction_policy                 = "Delete"
  max_bid_price                   = -1 # pay up to the on-demand price; capacity, not price, evicts
  overprovision                   = false
  single_placement_group          = false
  upgrade_mode                    = "Manual"
  encryption_at_host_enabled      = true
  admin_username                  = "sdqadmin"
  disable_password_authentication = true
  custom_data = base64encode(templatefile("${path.module}/templates/worker-cloud-init.yaml.tftpl", {
    image                = var.image
    storage_url          = local.storage_url
    default_model        = var.default_model
    idle_timeout_s       = var.idle_timeout_s
    model_cache_host_dir = local.model_cache_host_dir
    identity_client_id   = azurerm_user_assigned_identity.worker.client_id
    vault_uri            = azurerm_key_vault.this.vault_uri
  }))
  tags = merge(local.tags, { "sdqueue-role" = "worker" })

  admin_ssh_key {
    username   = "sdqadmin"
    public_key = var.admin_ssh_public_key
  }

  source_image_reference {
    publisher = var.worker_image.publisher
    offer     = var.worker_image.offer
    sku       = var.worker_image.sku
    version   = var.worker_image.version
  }

  os_disk {
    caching              = "ReadWrite"
    storage_account_type = "Premium_LRS"
    disk_size_gb         = 128
  }

  network_interface {
    name                      = "nic"
    primary                   = true
    network_security_group_id = azurerm_network_security_group.workers.id
    ip_configuration {
      name      = "internal"
      primary   = true
      subnet_id = azurerm_subnet.workers.id
    }
  }

  identity {
    type         = "UserAssigned"
    identity_ids = [azurerm_user_assigned_identity.worker.id]
  }

  # Scale-in by the platform (never expected: capacity only falls when a worker deletes itself) takes the newest VM.
  scale_in {
    rule = "NewestVM"
  }

  lifecycle {
    ignore_changes = [instances]
  }
}
