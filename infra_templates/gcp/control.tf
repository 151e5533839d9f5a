# The control VM: `sdq api` and `sdq controller` on one small on-demand VM without an external IP.

resource "google_compute_instance" "control" {
  name         = "${var.name}-control"
  machine_type = var.control_machine_type
  zone         = data.google_compute_zones.available.names[0]
  labels       = merge(local.labels, { "sdqueue-role" = "control" })
  tags         = ["sdq-control"]

  boot_disk {
    kms_key_self_link = google_kms_crypto_key.this.id
    initialize_params {
      image = "ubuntu-os-cloud/ubuntu-2204-lts"
      size  = 20
    }
  }

  network_interface {
    subnetwork = google_compute_subnetwork.this.id
    # No access_config: no external IP.
  }

  service_account {
    email  = google_service_account.control.email
    scopes = ["cloud-platform"] # IAM, not scopes, limits the account
  }

  shielded_instance_config {
    enable_secure_boot          = true
    enable_vtpm                 = true
    enable_integrity_monitoring = true
  }

  metadata = {
    "block-project-ssh-keys" = "true"
    "enable-oslogin"         = "TRUE"
    "startup-script" = templatefile("${path.module}/templates/control-startup.sh.tftpl", {
      image             = var.image
      project           = var.project
      region            = var.region
      redis_secret      = google_secret_manager_secret.redis_url.secret_id
      redis_ca_cert     = google_redis_instance.this.server_ca_certs[0].cert
      storage_url       = local.storage_url
      default_model     = var.default_model
      allowed_models    = join(",", var.allowed_models)
      api_port          = local.api_port
      idle_timeout_s    = var.idle_timeout_s
      worker_group_name = google_compute_region_instance_group_manager.workers.name
      max_workers       = var.max_workers
      prices_json       = jsonencode(var.prices)
    })
  }
}
