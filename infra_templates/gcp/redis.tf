# Memorystore for Redis: AUTH, TLS in transit (server authentication, port 6378), CMEK at rest, Standard HA.
# No cluster mode: Dramatiq's Lua script needs one shard.

resource "google_redis_instance" "this" {
  name                    = "${var.name}-redis"
  region                  = var.region
  tier                    = "STANDARD_HA"
  memory_size_gb          = var.redis_memory_gb
  redis_version           = "REDIS_7_2"
  authorized_network      = google_compute_network.this.id
  auth_enabled            = true
  transit_encryption_mode = "SERVER_AUTHENTICATION"
  customer_managed_key    = google_kms_crypto_key.this.id
  labels                  = local.labels
  depends_on              = [google_kms_crypto_key_iam_member.service_agents]

  redis_configs = {
    # Queue messages and job records must never be evicted to make room.
    "maxmemory-policy" = "noeviction"
  }
}

# The whole SDQ_REDIS_URL (AUTH string included) lives in Secret Manager; VMs read it at boot.
resource "google_secret_manager_secret" "redis_url" {
  secret_id  = "${var.name}-redis-url"
  labels     = local.labels
  depends_on = [google_kms_crypto_key_iam_member.service_agents]

  replication {
    user_managed {
      replicas {
        location = var.region
        customer_managed_encryption {
          kms_key_name = google_kms_crypto_key.this.id
        }
      }
    }
  }
}

resource "google_secret_manager_secret_version" "redis_url" {
  secret = google_secret_manager_secret.redis_url.id
  # The CA file path is where the VM's startup script writes Memorystore's server CA (mounted into the container).
  secret_data = "rediss://:${google_redis_instance.this.auth_string}@${google_redis_instance.this.host}:${google_redis_instance.this.port}/0?ssl_ca_certs=/etc/sdqueue/redis-ca.pem"
}
