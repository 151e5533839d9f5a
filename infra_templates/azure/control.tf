# The control VM: `sdq api` and `sdq controller` on one small on-demand VM without a public IP.

resource "azurerm_network_interface" "control" {
  name                = "${var.name}-control"
  location            = azurerm_resource_group.this.location
  resource_group_name = azurerm_resource_group.this.name
  tags                = local.tags

  ip_configuration {
    name                          = "internal"
    subnet_id                     = azurerm_subnet.control.id
    private_ip_address_allocation = "Dynamic"
  }
}

resource "azurerm_linux_virtual_machine" "control" {
  name                            = "${var.name}-control"
  location                        = azurerm_resource_group.this.location
  resource_group_name             = azurerm_resource_group.this.name
  size                            = var.control_vm_size
  priority                        = "Regular"
  admin_username                  = "sdqadmin"
  disable_password_authentication = true
  encryption_at_host_enabled      = true
  allow_extension_operations      = false
  network_interface_ids           = [azurerm_network_interface.control.id]
  custom_data = base64encode(templatefile("${path.module}/templates/control-cloud-init.yaml.tftpl", {
    image              = var.image
    storage_url        = local.storage_url
    default_model      = var.default_model
    allowed_models     = join(",", var.allowed_models)
    api_port           = local.api_port
    idle_timeout_s     = var.idle_timeout_s
    subscription_id    = var.subscription_id
    resource_group     = azurerm_resource_group.this.name
    vmss_name          = azurerm_linux_virtual_machine_scale_set.workers.name
    max_workers        = var.max_workers
    prices_json        = jsonencode(var.prices)
    identity_client_id = azurerm_user_assigned_identity.control.client_id
    vault_uri          = azurerm_key_vault.this.vault_uri
  }))
  tags = merge(local.tags, { "sdqueue-role" = "control" })

  admin_ssh_key {
    username   = "sdqadmin"
    public_key = var.admin_ssh_public_key
  }

  source_image_reference {
    publisher = "Canonical"
    offer     = "0001-com-ubuntu-server-jammy"
    sku       = "22_04-lts-gen2"
    version   = "latest"
  }

  os_disk {
    caching              = "ReadWrite"
    storage_account_type = "Premium_LRS"
    disk_size_gb         = 32
  }

  identity {
    type         = "UserAssigned"
    identity_ids = [azurerm_user_assigned_identity.control.id]
  }
}
