# Least privilege with one service account per role; custom roles list each permission (no wildcards) and every
# binding is conditioned on sdqueue's own resources.
#   worker:  objects under the prefix (read/write/delete), sign its own V4 URLs, read the Redis secret,
#            delete its own instance from the GPU group (self-retire after idle).
#   control: read outputs under the prefix, sign its own V4 URLs, read the Redis secret, resize the GPU group.

resource "google_service_account" "worker" {
  account_id   = "${var.name}-worker"
  display_name = "sdqueue GPU worker"
}

resource "google_service_account" "control" {
  account_id   = "${var.name}-control"
  display_name = "sdqueue API and controller"
}

resource "google_storage_bucket_iam_member" "worker_objects" {
  bucket = google_storage_bucket.objects.name
  role   = "roles/storage.objectUser"
  member = "serviceAccount:${google_service_account.worker.email}"
  condition {
    title      = "sdqueue-prefix"
    expression = "resource.name.startsWith(\"projects/_/buckets/${google_storage_bucket.objects.name}/objects/${local.prefix}/\")"
  }
}

resource "google_storage_bucket_iam_member" "control_outputs" {
  bucket = google_storage_bucket.objects.name
  role   = "roles/storage.objectViewer"
  member = "serviceAccount:${google_service_account.control.email}"
  condition {
    title      = "sdqueue-outputs"
    expression = "resource.name.startsWith(\"projects/_/buckets/${google_storage_bucket.objects.name}/objects/${local.prefix}/jobs/\")"
  }
}

# V4 signed URLs from a VM without key files: the account signs through the IAM Credentials API, as itself only.
resource "google_service_account_iam_member" "sign_as_self" {
  for_each           = { worker = google_service_account.worker, control = google_service_account.control }
  service_account_id = each.value.name
  role               = "roles/iam.serviceAccountTokenCreator"
  member             = "serviceAccount:${each.value.email}"
}

resource "google_secret_manager_secret_iam_member" "redis_url" {
  for_each  = { worker = google_service_account.worker.email, control = google_service_account.control.email }
  secret_id = google_secret_manager_secret.redis_url.id
  role      = "roles/secretmanager.secretAccessor"
  member    = "serviceAccount:${each.value}"
}

resource "google_project_iam_custom_role" "self_retire" {
  role_id     = replace("${var.name}_worker_self_retire", "-", "_")
  title       = "sdqueue worker self-retire"
  description = "Delete an instance from the sdqueue GPU managed instance group."
  permissions = [
    "compute.instanceGroupManagers.get",
    "compute.instanceGroupManagers.update",
    "compute.instances.delete",
  ]
}

resource "google_project_iam_custom_role" "scaler" {
  role_id     = replace("${var.name}_controller_scaler", "-", "_")
  title       = "sdqueue controller scaler"
  description = "Read and resize the sdqueue GPU managed instance group."
  # The group's own service agent creates the VMs; resizing needs nothing beyond the group itself.
  permissions = [
    "compute.instanceGroupManagers.get",
    "compute.instanceGroupManagers.update",
  ]
}

resource "google_project_iam_member" "worker_self_retire" {
  project = var.project
  role    = google_project_iam_custom_role.self_retire.id
  member  = "serviceAccount:${google_service_account.worker.email}"
  condition {
    title      = "own-group-only"
    expression = "resource.name.endsWith(\"/instanceGroupManagers/${local.worker_group_name}\") || resource.name.extract(\"/instances/{name}\").startsWith(\"${local.worker_base_name}-\")"
  }
}

resource "google_project_iam_member" "control_scaler" {
  project = var.project
  role    = google_project_iam_custom_role.scaler.id
  member  = "serviceAccount:${google_service_account.control.email}"
  condition {
    title      = "own-group-only"
    expression = "resource.name.endsWith(\"/instanceGroupManagers/${local.worker_group_name}\")"
  }
}
