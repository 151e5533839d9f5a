# The object store: generated images under <prefix>/jobs/, spot checkpoints under <prefix>/checkpoints/, input
# images under <prefix>/uploads/ (sent by clients with signed PUTs) and <prefix>/inputs/ (prepared per job).

resource "random_id" "bucket" {
  byte_length = 4
}

resource "google_storage_bucket" "objects" {
  #checkov:skip=CKV_GCP_62:Access logs belong in the organisation's log bucket (Cloud Audit Logs data access); this template does not own one.
  name                        = "${var.name}-objects-${random_id.bucket.hex}"
  location                    = var.region
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  labels                      = local.labels
  depends_on                  = [google_kms_crypto_key_iam_member.service_agents]

  encryption {
    default_kms_key_name = google_kms_crypto_key.this.id
  }

  versioning {
    enabled = true
  }

  # Browsers upload input images straight to the bucket from the dashboard's origin (a signed PUT) and may fetch
  # results: allowed only from var.dashboard_origins, and no rule at all without them. Cloud Storage answers a
  # preflight with `response_header` as both the headers a request may send and those it may read.
  dynamic "cors" {
    for_each = length(var.dashboard_origins) > 0 ? [var.dashboard_origins] : []
    content {
      origin          = cors.value
      method          = local.cors_methods
      response_header = ["Content-Type", "x-goog-content-length-range", "ETag"]
      max_age_seconds = local.cors_max_age_s
    }
  }

  lifecycle_rule {
    condition {
      age            = var.output_retention_days
      matches_prefix = ["${local.prefix}/jobs/"]
    }
    action {
      type = "Delete"
    }
  }

  lifecycle_rule {
    condition {
      age            = var.checkpoint_retention_days
      matches_prefix = ["${local.prefix}/checkpoints/"]
    }
    action {
      type = "Delete"
    }
  }

  lifecycle_rule {
    condition {
      age            = var.input_retention_days
      matches_prefix = ["${local.prefix}/uploads/", "${local.prefix}/inputs/"]
    }
    action {
      type = "Delete"
    }
  }

  # A retried job overwrites its deterministic keys; the overwritten generations go a day later.
  lifecycle_rule {
    condition {
      days_since_noncurrent_time = 1
      with_state                 = "ARCHIVED"
    }
    action {
      type = "Delete"
    }
  }
}

locals {
  cors_methods   = ["PUT", "POST", "GET", "HEAD"]
  cors_max_age_s = 3600 # a preflight answer is cached an hour
}
