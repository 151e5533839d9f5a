# Redis for the queue and the job records: ElastiCache with TLS in transit, AUTH, and KMS at rest. Cluster mode
# stays off: Dramatiq's Lua dispatch script does not support Redis Cluster (see FIELD_NOTES).

resource "random_password" "redis_auth" {
  length  = 48
  special = false # ElastiCache AUTH tokens allow only some printable characters; alphanumerics are always safe.
}

resource "aws_elasticache_subnet_group" "redis" {
  name       = "${var.name}-redis"
  subnet_ids = var.private_subnet_ids
}

resource "aws_elasticache_parameter_group" "redis" {
  name   = "${var.name}-redis7"
  family = "redis7"
  # Queue messages and job records must never be evicted to make room.
  parameter {
    name  = "maxmemory-policy"
    value = "noeviction"
  }
  # Job records stay compact listpacks, about half the memory per queued job (producer/embedded.py).
  parameter {
    name  = "hash-max-listpack-value"
    value = "2048"
  }
}

resource "aws_elasticache_replication_group" "redis" {
  replication_group_id       = "${var.name}-redis"
  description                = "sdqueue ${var.name}: Dramatiq queue and job records"
  engine                     = "redis"
  engine_version             = "7.1"
  node_type                  = var.redis_node_type
  port                       = 6379
  num_cache_clusters         = 2
  automatic_failover_enabled = true
  multi_az_enabled           = true
  parameter_group_name       = aws_elasticache_parameter_group.redis.name
  subnet_group_name          = aws_elasticache_subnet_group.redis.name
  security_group_ids         = [aws_security_group.redis.id]
  at_rest_encryption_enabled = true
  kms_key_id                 = aws_kms_key.sdqueue.arn
  transit_encryption_enabled = true
  auth_token                 = random_password.redis_auth.result
  snapshot_retention_limit   = 7
  auto_minor_version_upgrade = true
  apply_immediately          = false
}

# Processes read the whole SDQ_REDIS_URL (token included) from here at boot; it never appears in user data.
resource "aws_secretsmanager_secret" "redis_url" {
  #checkov:skip=CKV2_AWS_57:The AUTH token is rotated with ElastiCache's own token rotation (ModifyReplicationGroup AuthTokenUpdateStrategy), then this secret is updated; a Lambda rotator adds nothing.
  name_prefix             = "${var.name}-redis-url-"
  description             = "SDQ_REDIS_URL for sdqueue ${var.name} (rediss:// with the AUTH token)"
  kms_key_id              = aws_kms_key.sdqueue.arn
  recovery_window_in_days = 7
}

resource "aws_secretsmanager_secret_version" "redis_url" {
  secret_id     = aws_secretsmanager_secret.redis_url.id
  secret_string = "rediss://:${random_password.redis_auth.result}@${aws_elasticache_replication_group.redis.primary_endpoint_address}:6379/0"
}
