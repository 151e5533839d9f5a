# sdqueue on AWS: a spot GPU Auto Scaling group that starts at 0 and grows only when the controller raises its
# desired capacity; each worker retires its own instance after SDQ_IDLE_TIMEOUT_S idle. The API and the controller
# share one small on-demand instance. Redis is ElastiCache (TLS + AUTH); images go to an S3 bucket with expiry rules.

provider "aws" {
  region = var.region
  default_tags {
    tags = merge({ "app" = "sdqueue", "sdqueue:deployment" = var.name }, var.tags)
  }
}

data "aws_caller_identity" "current" {}
data "aws_partition" "current" {}

data "aws_vpc" "this" {
  id = var.vpc_id
}

data "aws_ssm_parameter" "worker_ami" {
  name = var.worker_ami_ssm_parameter
}

data "aws_ssm_parameter" "control_ami" {
  name = "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64"
}

locals {
  prefix            = trim(var.storage_prefix, "/")
  storage_url       = "s3://${aws_s3_bucket.objects.bucket}/${local.prefix}?region=${var.region}"
  worker_group_name = "${var.name}-gpu-workers"
  api_port          = 8000
  # "<account>.dkr.ecr.<region>.amazonaws.com" when the image comes from ECR; empty otherwise.
  ecr_registry = var.ecr_repository_arn == null ? "" : split("/", var.image)[0]
  api_cidrs    = length(var.api_ingress_cidrs) > 0 ? var.api_ingress_cidrs : [data.aws_vpc.this.cidr_block]
  # Mounted from local NVMe instance store by the worker's cloud-init; the container sees it as /models.
  model_cache_host_dir = "/mnt/sdq-models"
}

# One customer-managed key encrypts everything at rest: the bucket, Redis, EBS volumes and the Redis secret.
resource "aws_kms_key" "sdqueue" {
  #checkov:skip=CKV2_AWS_64:No explicit key policy on purpose: AWS's default policy delegates to IAM in this account, and the roles below get only encrypt/decrypt on this key.
  description             = "sdqueue ${var.name}: S3 objects, ElastiCache, EBS, Secrets Manager"
  enable_key_rotation     = true
  deletion_window_in_days = 30
}

resource "aws_kms_alias" "sdqueue" {
  name          = "alias/${var.name}"
  target_key_id = aws_kms_key.sdqueue.key_id
}

# No SSH anywhere: no key pairs, no port 22. Shell access, if needed, goes through SSM Session Manager.
resource "aws_security_group" "workers" {
  name        = "${var.name}-workers"
  description = "sdqueue GPU workers: no inbound; outbound HTTPS and Redis"
  vpc_id      = var.vpc_id

  egress {
    description = "HTTPS: S3, the Auto Scaling API, the container registry, model downloads"
    from_port   = 443
    to_port     = 443
    protocol    = "tcp"
    cidr_blocks = ["0.0.0.0/0"]
  }
  egress {
    description = "Redis (TLS) inside the VPC"
    from_port   = 6379
    to_port     = 6379
    protocol    = "tcp"
    cidr_blocks = [data.aws_vpc.this.cidr_block]
  }
}

resource "aws_security_group" "control" {
  name        = "${var.name}-control"
  description = "sdqueue API and controller: the API port from allowed CIDRs; outbound HTTPS and Redis"
  vpc_id      = var.vpc_id

  ingress {
    description = "sdqueue HTTP API"
    from_port   = local.api_port
    to_port     = local.api_port
    protocol    = "tcp"
    cidr_blocks = local.api_cidrs
  }
  egress {
    description = "HTTPS: S3, the Auto Scaling API, the container registry"
    from_port   = 443
    to_port     = 443
    protocol    = "tcp"
    cidr_blocks = ["0.0.0.0/0"]
  }
  egress {
    description = "Redis (TLS) inside the VPC"
    from_port   = 6379
    to_port     = 6379
    protocol    = "tcp"
    cidr_blocks = [data.aws_vpc.this.cidr_block]
  }
}

resource "aws_security_group" "redis" {
  name        = "${var.name}-redis"
  description = "sdqueue ElastiCache: Redis from workers and the control instance only"
  vpc_id      = var.vpc_id

  ingress {
    description     = "Redis (TLS) from sdqueue workers and control"
    from_port       = 6379
    to_port         = 6379
    protocol        = "tcp"
    security_groups = [aws_security_group.workers.id, aws_security_group.control.id]
  }
  egress {
    description = "Replication between Redis nodes"
    from_port   = 6379
    to_port     = 6379
    protocol    = "tcp"
    self        = true
  }
}
