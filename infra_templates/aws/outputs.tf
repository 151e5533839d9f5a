output "api_url" {
  description = "The sdqueue API inside the VPC (put a gateway or load balancer in front for clients)."
  value       = "http://${aws_instance.control.private_ip}:${local.api_port}"
}

output "worker_group_name" {
  description = "The spot GPU Auto Scaling group (SDQ_AWS_ASG_NAME)."
  value       = aws_autoscaling_group.workers.name
}

output "bucket" {
  description = "The object bucket."
  value       = aws_s3_bucket.objects.bucket
}

output "storage_url" {
  description = "SDQ_STORAGE_URL for every sdqueue process."
  value       = local.storage_url
}

output "redis_url_secret_arn" {
  description = "Secrets Manager secret holding SDQ_REDIS_URL (rediss:// with the AUTH token)."
  value       = aws_secretsmanager_secret.redis_url.arn
}

output "kms_key_arn" {
  description = "The key that encrypts the bucket, Redis, EBS volumes and the secret."
  value       = aws_kms_key.sdqueue.arn
}
