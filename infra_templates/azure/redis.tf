# Azure Cache for Redis: TLS only (port 6380), AUTH with the access key, no public network access (a private
# endpoint in the virtual network). Standard tier, not Premium clustering: Dramatiq's Lua script needs one shard.

resource "azurerm_redis_cache" "this" {
  name                          = "${var.name}-redis-${random_string.storage_suffix.result}"
  location                      = azurerm_resource_group.this.location
  resource_group_name           = azurerm_resource_group.this.name
  capacity                      = 1
  family                        = "C"
  sku_name                      = "Standard"
  non_ssl_port_enabled          = false
  minimum_tls_version           = "1.2"
  public_network_access_enabled = false
  tags                          = local.tags

  redis_configuration {
    # Queue messages and job records must never be evicted to make room.
    maxmemory_policy = "noeviction"
  }
}

resource "azurerm_private_dns_zone" "redis" {
  name                = "privatelink.redis.cache.windows.net"
  resource_group_name = azurerm_resource_group.this.name
  tags                = local.tags
}

resource "azurerm_private_dns_zone_virtual_network_link" "redis" {
  name                  = "${var.name}-redis"
  resource_group_name   = azurerm_resource_group.this.name
  private_dns_zone_name = azurerm_private_dns_zone.redis.name
  virtual_network_id    = azurerm_virtual_network.this.id
  tags                  = local.tags
}

resource "azurerm_private_endpoint" "redis" {
  name                = "${var.name}-redis"
  location            = azurerm_resource_group.this.location
  resource_group_name = azurerm_resource_group.this.name
  subnet_id           = azurerm_subnet.private_endpoints.id
  tags                = local.tags

  private_service_connection {
    name                           = "redis"
    private_connection_resource_id = azurerm_redis_cache.this.id
    subresource_names              = ["redisCache"]
    is_manual_connection           = false
  }

  private_dns_zone_group {
    name                 = "redis"
    private_dns_zone_ids = [azurerm_private_dns_zone.redis.id]
  }
}

# The whole SDQ_REDIS_URL (access key included) lives in Key Vault; VMs read it at boot with their managed identity.
resource "azurerm_key_vault" "this" {
  #checkov:skip=CKV2_AZURE_32:The vault admits only the sdqueue subnets (service endpoints) and the deployer's CIDRs; a private endpoint would lock Terraform out.
  name                          = "${var.name}-kv-${random_string.storage_suffix.result}"
  location                      = azurerm_resource_group.this.location
  resource_group_name           = azurerm_resource_group.this.name
  tenant_id                     = data.azurerm_client_config.current.tenant_id
  sku_name                      = "standard"
  enable_rbac_authorization     = true
  purge_protection_enabled      = true
  soft_delete_retention_days    = 7
  public_network_access_enabled = true
  tags                          = local.tags

  network_acls {
    default_action             = "Deny"
    bypass                     = "AzureServices"
    ip_rules                   = var.deployer_cidrs
    virtual_network_subnet_ids = [azurerm_subnet.workers.id, azurerm_subnet.control.id]
  }
}

resource "azurerm_role_assignment" "deployer_writes_secrets" {
  scope                = azurerm_key_vault.this.id
  role_definition_name = "Key Vault Secrets Officer"
  principal_id         = data.azurerm_client_config.current.object_id
}

resource "azurerm_key_vault_secret" "redis_url" {
  #checkov:skip=CKV_AZURE_41:The access key does not expire on its own; rotate it with the cache's key regeneration, then update this secret.
  name         = "sdq-redis-url"
  key_vault_id = azurerm_key_vault.this.id
  content_type = "text/uri-list"
  value        = "rediss://:${azurerm_redis_cache.this.primary_access_key}@${azurerm_redis_cache.this.hostname}:${azurerm_redis_cache.this.ssl_port}/0"
  depends_on   = [azurerm_role_assignment.deployer_writes_secrets]
}
