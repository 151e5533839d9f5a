# The object store: generated images under <prefix>/jobs/, spot checkpoints under <prefix>/checkpoints/, input
# images under <prefix>/uploads/ (sent by clients with presigned grants) and <prefix>/inputs/ (prepared per job).

resource "aws_s3_bucket" "objects" {
  #checkov:skip=CKV_AWS_144:Cross-region replication doubles storage cost for images that expire in days; regenerate instead.
  #checkov:skip=CKV_AWS_18:Access logging needs a separate log bucket that belongs to the account's logging set-up; enable it there (CloudTrail data events or server access logs).
  #checkov:skip=CKV2_AWS_62:Nothing consumes bucket events: the job record in Redis is the source of truth.
  bucket_prefix = "${var.name}-objects-"
}

resource "aws_s3_bucket_public_access_block" "objects" {
  bucket                  = aws_s3_bucket.objects.id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_ownership_controls" "objects" {
  bucket = aws_s3_bucket.objects.id
  rule {
    object_ownership = "BucketOwnerEnforced"
  }
}

resource "aws_s3_bucket_versioning" "objects" {
  bucket = aws_s3_bucket.objects.id
  versioning_configuration {
    status = "Enabled"
  }
}

resource "aws_s3_bucket_server_side_encryption_configuration" "objects" {
  bucket = aws_s3_bucket.objects.id
  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm     = "aws:kms"
      kms_master_key_id = aws_kms_key.sdqueue.arn
    }
    bucket_key_enabled = true
  }
}

# Outputs live for output_retention_days, checkpoints only for checkpoint_retention_days, uploaded and prepared
# input images (uploads/, inputs/) for input_retention_days; overwritten versions
# (a retried job rewrites the same deterministic key) go a day later; stalled multipart uploads after a day.
resource "aws_s3_bucket_lifecycle_configuration" "objects" {
  bucket     = aws_s3_bucket.objects.id
  depends_on = [aws_s3_bucket_versioning.objects]

  rule {
    id     = "abort-stalled-uploads"
    status = "Enabled"
    filter {}
    abort_incomplete_multipart_upload {
      days_after_initiation = 1
    }
  }

  rule {
    id     = "expire-outputs"
    status = "Enabled"
    filter {
      prefix = "${local.prefix}/jobs/"
    }
    expiration {
      days = var.output_retention_days
    }
    noncurrent_version_expiration {
      noncurrent_days = 1
    }
  }

  rule {
    id     = "expire-checkpoints"
    status = "Enabled"
    filter {
      prefix = "${local.prefix}/checkpoints/"
    }
    expiration {
      days = var.checkpoint_retention_days
    }
    noncurrent_version_expiration {
      noncurrent_days = 1
    }
  }

  rule {
    id     = "expire-uploads"
    status = "Enabled"
    filter {
      prefix = "${local.prefix}/uploads/"
    }
    expiration {
      days = var.input_retention_days
    }
    noncurrent_version_expiration {
      noncurrent_days = 1
    }
  }

  rule {
    id     = "expire-inputs"
    status = "Enabled"
    filter {
      prefix = "${local.prefix}/inputs/"
    }
    expiration {
      days = var.input_retention_days
    }
    noncurrent_version_expiration {
      noncurrent_days = 1
    }
  }
}

data "aws_iam_policy_document" "objects_bucket" {
  statement {
    sid     = "DenyInsecureTransport"
    effect  = "Deny"
    actions = ["s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:ListBucket"]
    resources = [
      aws_s3_bucket.objects.arn,
      "${aws_s3_bucket.objects.arn}/*",
    ]
    principals {
      type        = "*"
      identifiers = ["*"]
    }
    condition {
      test     = "Bool"
      variable = "aws:SecureTransport"
      values   = ["false"]
    }
  }
}

resource "aws_s3_bucket_policy" "objects" {
  bucket = aws_s3_bucket.objects.id
  policy = data.aws_iam_policy_document.objects_bucket.json
}

# Browsers upload input images straight to the bucket from the dashboard's origin (a POST policy; PUT for other
# grants) and may fetch results: allowed only from var.dashboard_origins, and no rule at all without them.
resource "aws_s3_bucket_cors_configuration" "objects" {
  count  = length(var.dashboard_origins) > 0 ? 1 : 0
  bucket = aws_s3_bucket.objects.id

  cors_rule {
    id              = "dashboard-uploads"
    allowed_origins = var.dashboard_origins
    allowed_methods = local.cors_methods
    allowed_headers = ["content-type"]
    expose_headers  = ["ETag"]
    max_age_seconds = local.cors_max_age_s
  }
}

locals {
  cors_methods   = ["PUT", "POST", "GET", "HEAD"]
  cors_max_age_s = 3600 # a preflight answer is cached an hour
}
