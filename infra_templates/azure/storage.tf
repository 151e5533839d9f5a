# The object store: generated images under <prefix>/jobs/, spot checkpoints under <prefix>/checkpoints/, input
# images under <prefix>/uploads/ (sent by clients with a write SAS) and <prefix>/inputs/ (prepared per job).
# Clients download through user-delegation SAS URLs, so the blob endpoint stays reachable from the internet;
# every request still needs a valid SAS or an Entra ID token (no anonymous access, no shared keys).

resource "random_string" "storage_suffix" {
  length  = 6
  special = false
  upper   = false
}

resource "azurerm_storage_account" "objects" {
  #checkov:skip=CKV_AZURE_59:Presigned (user-delegation SAS) downloads come from the internet; anonymous access and shared keys are off.
  #checkov:skip=CKV2_AZURE_33:A private endpoint would make the SAS URLs unusable for clients outside the network.
  #checkov:skip=CKV_AZURE_206:Generated images expire within days and can be regenerated from their seed; geo-replication doubles the cost.
  #checkov:skip=CKV2_AZURE_1:Platform-managed keys plus infrastructure (double) encryption; bring a customer-managed key if policy requires one.
  #checkov:skip=CKV_AZURE_33:sdqueue uses no storage queues; the queue service stays unused.
  name                              = substr("${var.name}${random_string.storage_suffix.result}", 0, 24)
  resource_group_name               = azurerm_resource_group.this.name
  location                          = azurerm_resource_group.this.location
  account_tier                      = "Standard"
  account_replication_type          = "ZRS"
  min_tls_version                   = "TLS1_2"
  https_traffic_only_enabled        = true
  allow_nested_items_to_be_public   = false
  shared_access_key_enabled         = false
  infrastructure_encryption_enabled = true
  default_to_oauth_authentication   = true
  local_user_enabled                = false
  tags                              = local.tags

  blob_properties {
    delete_retention_policy {
      days = 7
    }
    container_delete_retention_policy {
      days = 7
    }

    # Browsers upload input images straight to the blob endpoint from the dashboard's origin (a write SAS, PUT)
    # and may fetch results: allowed only from var.dashboard_origins, and no rule at all without them.
    dynamic "cors_rule" {
      for_each = length(var.dashboard_origins) > 0 ? [var.dashboard_origins] : []
      content {
        allowed_origins    = cors_rule.value
        allowed_methods    = local.cors_methods
        allowed_headers    = ["content-type", "x-ms-blob-type"]
        exposed_headers    = ["etag"]
        max_age_in_seconds = local.cors_max_age_s
      }
    }
  }

  sas_policy {
    expiration_period = "7.00:00:00"
  }
}

resource "azurerm_storage_container" "objects" {
  #checkov:skip=CKV2_AZURE_21:Blob read logging is a diagnostic setting into the organisation's Log Analytics workspace, which this template does not own; add azurerm_monitor_diagnostic_setting there.
  name                  = local.container
  storage_account_id    = azurerm_storage_account.objects.id
  container_access_type = "private"
}

# Outputs live output_retention_days, checkpoints only checkpoint_retention_days, input images (uploads/, inputs/)
# input_retention_days.
resource "azurerm_storage_management_policy" "objects" {
  storage_account_id = azurerm_storage_account.objects.id

  rule {
    name    = "expire-outputs"
    enabled = true
    filters {
      blob_types   = ["blockBlob"]
      prefix_match = ["${local.container}/${local.prefix}/jobs/"]
    }
    actions {
      base_blob {
        delete_after_days_since_modification_greater_than = var.output_retention_days
      }
    }
  }

  rule {
    name    = "expire-checkpoints"
    enabled = true
    filters {
      blob_types   = ["blockBlob"]
      prefix_match = ["${local.container}/${local.prefix}/checkpoints/"]
    }
    actions {
      base_blob {
        delete_after_days_since_modification_greater_than = var.checkpoint_retention_days
      }
    }
  }

  rule {
    name    = "expire-uploads"
    enabled = true
    filters {
      blob_types   = ["blockBlob"]
      prefix_match = ["${local.container}/${local.prefix}/uploads/"]
    }
    actions {
      base_blob {
        delete_after_days_since_modification_greater_than = var.input_retention_days
      }
    }
  }

  rule {
    name    = "expire-inputs"
    enabled = true
    filters {
      blob_types   = ["blockBlob"]
      prefix_match = ["${local.container}/${local.prefix}/inputs/"]
    }
    actions {
      base_blob {
        delete_after_days_since_modification_greater_than = var.input_retention_days
      }
    }
  }
}

locals {
  cors_methods   = ["PUT", "POST", "GET", "HEAD"]
  cors_max_age_s = 3600 # a preflight answer is cached an hour
}
