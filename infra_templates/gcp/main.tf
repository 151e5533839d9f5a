# sdqueue on GCP: a regional managed instance group of SPOT GPU VMs with target size 0 that grows only when the
# controller resizes it; each worker deletes itself from the group after SDQ_IDLE_TIMEOUT_S idle. The API and the
# controller share one small on-demand VM. Redis is Memorystore (AUTH + TLS); images go to a bucket with lifecycle
# rules. No VM has an external IP; egress goes through Cloud NAT; no firewall rule admits SSH.

provider "google" {
  project = var.project
  region  = var.region
}

# Only for the service identities of Secret Manager and Memorystore (their KMS grants need the agents' emails).
provider "google-beta" {
  project = var.project
  region  = var.region
}

data "google_project" "this" {}

data "google_compute_zones" "available" {
  region = var.region
  status = "UP"
}

locals {
  labels               = merge({ "app" = "sdqueue", "sdqueue-deployment" = var.name }, var.labels)
  prefix               = trim(var.storage_prefix, "/")
  storage_url          = "gs://${google_storage_bucket.objects.name}/${local.prefix}"
  api_port             = 8000
  api_cidrs            = length(var.api_ingress_cidrs) > 0 ? var.api_ingress_cidrs : [var.subnet_cidr]
  worker_group_name    = "${var.name}-gpu-workers"
  worker_base_name     = "${var.name}-gpu"
  worker_zones         = length(var.worker_zones) > 0 ? var.worker_zones : data.google_compute_zones.available.names
  model_cache_host_dir = "/mnt/disks/sdq-models"
}

resource "google_compute_network" "this" {
  name                    = "${var.name}-vpc"
  auto_create_subnetworks = false
}

resource "google_compute_subnetwork" "this" {
  name                     = "${var.name}-subnet"
  region                   = var.region
  network                  = google_compute_network.this.id
  ip_cidr_range            = var.subnet_cidr
  private_ip_google_access = true

  log_config {
    aggregation_interval = "INTERVAL_5_MIN"
    flow_sampling        = 0.5
    metadata             = "INCLUDE_ALL_METADATA"
  }
}

resource "google_compute_router" "this" {
  name    = "${var.name}-router"
  region  = var.region
  network = google_compute_network.this.id
}

# Egress only (images, model downloads, Google APIs); nothing can connect in through it.
resource "google_compute_router_nat" "this" {
  name                               = "${var.name}-nat"
  router                             = google_compute_router.this.name
  region                             = var.region
  nat_ip_allocate_option             = "AUTO_ONLY"
  source_subnetwork_ip_ranges_to_nat = "ALL_SUBNETWORKS_ALL_IP_RANGES"

  log_config {
    enable = true
    filter = "ERRORS_ONLY"
  }
}

resource "google_compute_firewall" "api" {
  name          = "${var.name}-api"
  network       = google_compute_network.this.id
  description   = "sdqueue API port from the allowed CIDRs; nothing else (no SSH)"
  direction     = "INGRESS"
  source_ranges = local.api_cidrs
  target_tags   = ["sdq-control"]

  allow {
    protocol = "tcp"
    ports    = [tostring(local.api_port)]
  }
}

# One Cloud KMS key encrypts the bucket, Memorystore, the Redis secret and the VM disks at rest.
resource "google_kms_key_ring" "this" {
  name     = "${var.name}-keyring"
  location = var.region
}

resource "google_kms_crypto_key" "this" {
  name            = "${var.name}-key"
  key_ring        = google_kms_key_ring.this.id
  rotation_period = "7776000s" # 90 days
  labels          = local.labels

  lifecycle {
    prevent_destroy = true
  }
}

# Google's service agents encrypt on sdqueue's behalf.
resource "google_project_service_identity" "secretmanager" {
  provider = google-beta
  service  = "secretmanager.googleapis.com"
}

resource "google_project_service_identity" "redis" {
  provider = google-beta
  service  = "redis.googleapis.com"
}

data "google_storage_project_service_account" "gcs" {}

resource "google_kms_crypto_key_iam_member" "service_agents" {
  for_each = {
    gcs     = "serviceAccount:${data.google_storage_project_service_account.gcs.email_address}"
    compute = "serviceAccount:service-${data.google_project.this.number}@compute-system.iam.gserviceaccount.com"
    secrets = "serviceAccount:${google_project_service_identity.secretmanager.email}"
    redis   = "serviceAccount:${google_project_service_identity.redis.email}"
  }
  crypto_key_id = google_kms_crypto_key.this.id
  role          = "roles/cloudkms.cryptoKeyEncrypterDecrypter"
  member        = each.value
}
