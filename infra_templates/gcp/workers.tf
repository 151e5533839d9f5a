# The SPOT GPU group: a regional managed instance group created with target size 0. Only the controller resizes it
# up; only idle workers shrink it (each deletes itself from the group), so Terraform ignores target_size after
# creation. Preempted VMs are deleted, not stopped, and the group recreates them when capacity returns.

resource "google_compute_instance_template" "worker" {
  #checkov:skip=CKV_GCP_39:Shielded VM secure boot would refuse the unsigned NVIDIA kernel modules of the Deep Learning VM image; vTPM and integrity monitoring stay on.
  name_prefix  = "${local.worker_base_name}-"
  machine_type = var.worker_machine_type
  labels       = merge(local.labels, { "sdqueue-role" = "worker" })
  tags         = ["sdq-worker"]

  scheduling {
    provisioning_model          = "SPOT"
    preemptible                 = true
    automatic_restart           = false
    on_host_maintenance         = "TERMINATE"
    instance_termination_action = "DELETE"
  }

  guest_accelerator {
    type  = var.worker_gpu.type
    count = var.worker_gpu.count
  }

  disk {
    source_image = var.worker_boot_image
    boot         = true
    auto_delete  = true
    disk_type    = "pd-balanced"
    disk_size_gb = 100
    disk_encryption_key {
      kms_key_self_link = google_kms_crypto_key.this.id
    }
  }

  dynamic "disk" {
    for_each = range(var.worker_local_ssd_count)
    content {
      type         = "SCRATCH"
      disk_type    = "local-ssd"
      disk_size_gb = 375
      interface    = "NVME"
    }
  }

  network_interface {
    subnetwork = google_compute_subnetwork.this.id
    # No access_config: no external IP.
  }

  service_account {
    email  = google_service_account.worker.email
    scopes = ["cloud-platform"] # IAM, not scopes, limits the account
  }

  shielded_instance_config {
    enable_secure_boot          = false
    enable_vtpm                 = true
    enable_integrity_monitoring = true
  }

  metadata = {
    "block-project-ssh-keys" = "true"
    "enable-oslogin"         = "TRUE"
    "install-nvidia-driver"  = "True"
    "startup-script" = templatefile("${path.module}/templates/worker-startup.sh.tftpl", {
      image                = var.image
      project              = var.project
      redis_secret         = google_secret_manager_secret.redis_url.secret_id
      redis_ca_cert        = google_redis_instance.this.server_ca_certs[0].cert
      storage_url          = local.storage_url
      default_model        = var.default_model
      idle_timeout_s       = var.idle_timeout_s
      model_cache_host_dir = local.model_cache_host_dir
    })
  }

  lifecycle {
    create_before_destroy = true
  }
}

resource "google_compute_region_instance_group_manager" "workers" {
  name                      = local.worker_group_name
  region                    = var.region
  base_instance_name        = local.worker_base_name
  target_size               = 0
  distribution_policy_zones = local.worker_zones

  version {
    instance_template = google_compute_instance_template.worker.id
  }

  # A new template reaches new VMs only: never recreate a busy worker to roll out a change.
  update_policy {
    type                         = "OPPORTUNISTIC"
    minimal_action               = "REPLACE"
    instance_redistribution_type = "NONE"
    max_surge_fixed              = 0
    max_unavailable_fixed        = length(local.worker_zones)
  }

  lifecycle {
    ignore_changes = [target_size]
  }
}
