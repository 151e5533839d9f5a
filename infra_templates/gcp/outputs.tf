output "api_url" {
  description = "The sdqueue API inside the VPC (put a gateway or load balancer in front for clients)."
  value       = "http://${google_compute_instance.control.network_interface[0].network_ip}:${local.api_port}"
}

output "worker_group_name" {
  description = "The SPOT GPU managed instance group (SDQ_GCP_MIG_NAME)."
  value       = google_compute_region_instance_group_manager.workers.name
}

output "storage_url" {
  description = "SDQ_STORAGE_URL for every sdqueue process."
  value       = local.storage_url
}

output "redis_url_secret" {
  description = "Secret Manager secret holding SDQ_REDIS_URL (rediss:// with the AUTH string)."
  value       = google_secret_manager_secret.redis_url.id
}
