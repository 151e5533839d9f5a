# sdqueue on Azure: a Spot GPU VM Scale Set (eviction policy Delete) that starts at 0 instances and grows only when
# the controller raises its capacity; each worker deletes its own instance after SDQ_IDLE_TIMEOUT_S idle. The API
# and the controller share one small on-demand VM. Redis is Azure Cache for Redis (TLS only, private endpoint);
# images go to a private blob container with lifecycle rules; clients download them through user-delegation SAS.

provider "azurerm" {
  subscription_id = var.subscription_id
  # Shared keys are disabled on the storage account: Terraform and sdqueue both use Entra ID.
  storage_use_azuread = true
  features {}
}

data "azurerm_client_config" "current" {}

locals {
  tags                 = merge({ "app" = "sdqueue", "sdqueue-deployment" = var.name }, var.tags)
  prefix               = trim(var.storage_prefix, "/")
  container            = "objects"
  storage_url          = "az://${azurerm_storage_account.objects.name}/${local.container}/${local.prefix}"
  api_port             = 8000
  api_cidrs            = length(var.api_ingress_cidrs) > 0 ? var.api_ingress_cidrs : [var.address_space]
  model_cache_host_dir = "/mnt/sdq-models"
}

resource "azurerm_resource_group" "this" {
  name     = "${var.name}-rg"
  location = var.location
  tags     = local.tags
}

resource "azurerm_virtual_network" "this" {
  name                = "${var.name}-vnet"
  location            = azurerm_resource_group.this.location
  resource_group_name = azurerm_resource_group.this.name
  address_space       = [var.address_space]
  tags                = local.tags
}

resource "azurerm_subnet" "workers" {
  name                 = "workers"
  resource_group_name  = azurerm_resource_group.this.name
  virtual_network_name = azurerm_virtual_network.this.name
  address_prefixes     = [cidrsubnet(var.address_space, 4, 0)]
  service_endpoints    = ["Microsoft.KeyVault", "Microsoft.Storage"]
}

resource "azurerm_subnet" "control" {
  name                 = "control"
  resource_group_name  = azurerm_resource_group.this.name
  virtual_network_name = azurerm_virtual_network.this.name
  address_prefixes     = [cidrsubnet(var.address_space, 8, 16)]
  service_endpoints    = ["Microsoft.KeyVault", "Microsoft.Storage"]
}

resource "azurerm_subnet" "private_endpoints" {
  name                 = "private-endpoints"
  resource_group_name  = azurerm_resource_group.this.name
  virtual_network_name = azurerm_virtual_network.this.name
  address_prefixes     = [cidrsubnet(var.address_space, 8, 17)]
  # NSG rules apply to private endpoints only with network policies on.
  private_endpoint_network_policies = "Enabled"
}

# No SSH from anywhere: workers take no inbound traffic at all; the control VM only the API port.
resource "azurerm_network_security_group" "workers" {
  name                = "${var.name}-workers"
  location            = azurerm_resource_group.this.location
  resource_group_name = azurerm_resource_group.this.name
  tags                = local.tags

  security_rule {
    name                       = "deny-all-inbound"
    priority                   = 4000
    direction                  = "Inbound"
    access                     = "Deny"
    protocol                   = "*"
    source_port_range          = "*"
    destination_port_range     = "*"
    source_address_prefix      = "*"
    destination_address_prefix = "*"
  }
}

resource "azurerm_network_security_group" "control" {
  name                = "${var.name}-control"
  location            = azurerm_resource_group.this.location
  resource_group_name = azurerm_resource_group.this.name
  tags                = local.tags

  security_rule {
    name                       = "sdqueue-api"
    priority                   = 100
    direction                  = "Inbound"
    access                     = "Allow"
    protocol                   = "Tcp"
    source_port_range          = "*"
    destination_port_range     = tostring(local.api_port)
    source_address_prefixes    = local.api_cidrs
    destination_address_prefix = "*"
  }
  security_rule {
    name                       = "deny-all-other-inbound"
    priority                   = 4000
    direction                  = "Inbound"
    access                     = "Deny"
    protocol                   = "*"
    source_port_range          = "*"
    destination_port_range     = "*"
    source_address_prefix      = "*"
    destination_address_prefix = "*"
  }
}

resource "azurerm_network_security_group" "private_endpoints" {
  name                = "${var.name}-private-endpoints"
  location            = azurerm_resource_group.this.location
  resource_group_name = azurerm_resource_group.this.name
  tags                = local.tags

  security_rule {
    name                       = "redis-tls-from-sdqueue"
    priority                   = 100
    direction                  = "Inbound"
    access                     = "Allow"
    protocol                   = "Tcp"
    source_port_range          = "*"
    destination_port_range     = "6380"
    source_address_prefixes    = [azurerm_subnet.workers.address_prefixes[0], azurerm_subnet.control.address_prefixes[0]]
    destination_address_prefix = "*"
  }
  security_rule {
    name                       = "deny-all-other-inbound"
    priority                   = 4000
    direction                  = "Inbound"
    access                     = "Deny"
    protocol                   = "*"
    source_port_range          = "*"
    destination_port_range     = "*"
    source_address_prefix      = "*"
    destination_address_prefix = "*"
  }
}

resource "azurerm_subnet_network_security_group_association" "private_endpoints" {
  subnet_id                 = azurerm_subnet.private_endpoints.id
  network_security_group_id = azurerm_network_security_group.private_endpoints.id
}

resource "azurerm_subnet_network_security_group_association" "workers" {
  subnet_id                 = azurerm_subnet.workers.id
  network_security_group_id = azurerm_network_security_group.workers.id
}

resource "azurerm_subnet_network_security_group_association" "control" {
  subnet_id                 = azurerm_subnet.control.id
  network_security_group_id = azurerm_network_security_group.control.id
}
