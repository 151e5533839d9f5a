output "api_url" {
  description = "The sdqueue API inside the virtual network (put a gateway in front for clients)."
  value       = "http://${azurerm_network_interface.control.private_ip_address}:${local.api_port}"
}

output "worker_scale_set" {
  description = "The Spot GPU VM Scale Set (SDQ_AZURE_VMSS_NAME)."
  value       = azurerm_linux_virtual_machine_scale_set.workers.name
}

output "resource_group" {
  description = "The resource group (SDQ_AZURE_RESOURCE_GROUP)."
  value       = azurerm_resource_group.this.name
}

output "storage_url" {
  description = "SDQ_STORAGE_URL for every sdqueue process."
  value       = local.storage_url
}

output "key_vault_uri" {
  description = "Key Vault holding the secret sdq-redis-url (SDQ_REDIS_URL)."
  value       = azurerm_key_vault.this.vault_uri
}
