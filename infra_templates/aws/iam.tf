# Least privilege. Workers: read/write objects under the prefix, read the Redis secret, and terminate *their own
# group's* instances (self-retire after idle). Control (API + controller): read outputs under the prefix (presigned
# URLs act with the signer's rights), read the Redis secret, and set the worker group's desired capacity.
# No statement allows a wildcard action.

data "aws_iam_policy_document" "ec2_assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["ec2.amazonaws.com"]
    }
  }
}

data "aws_iam_policy_document" "worker" {
  statement {
    sid       = "ObjectsUnderPrefix"
    actions   = ["s3:GetObject", "s3:PutObject"]
    resources = ["${aws_s3_bucket.objects.arn}/${local.prefix}/*"]
  }
  statement {
    sid       = "DropCheckpointsAfterResume"
    actions   = ["s3:DeleteObject"]
    resources = ["${aws_s3_bucket.objects.arn}/${local.prefix}/checkpoints/*"]
  }
  statement {
    # Without ListBucket S3 answers 403 instead of 404 for a missing key.
    sid       = "ListPrefixOnly"
    actions   = ["s3:ListBucket"]
    resources = [aws_s3_bucket.objects.arn]
    condition {
      test     = "StringLike"
      variable = "s3:prefix"
      values   = ["${local.prefix}/*"]
    }
  }
  statement {
    sid       = "UseTheKey"
    actions   = ["kms:Decrypt", "kms:GenerateDataKey"]
    resources = [aws_kms_key.sdqueue.arn]
  }
  statement {
    sid       = "RedisUrl"
    actions   = ["secretsmanager:GetSecretValue"]
    resources = [aws_secretsmanager_secret.redis_url.arn]
  }
  statement {
    sid       = "SelfRetire"
    actions   = ["autoscaling:TerminateInstanceInAutoScalingGroup"]
    resources = [aws_autoscaling_group.workers.arn]
    condition {
      test     = "StringEquals"
      variable = "autoscaling:ResourceTag/sdqueue:group"
      values   = [local.worker_group_name]
    }
  }

  dynamic "statement" {
    for_each = var.ecr_repository_arn == null ? [] : [var.ecr_repository_arn]
    content {
      sid       = "PullTheImage"
      actions   = ["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer", "ecr:BatchCheckLayerAvailability"]
      resources = [statement.value]
    }
  }
  dynamic "statement" {
    # ECR issues registry tokens account-wide: IAM accepts no narrower resource for this one call.
    for_each = var.ecr_repository_arn == null ? [] : [var.ecr_repository_arn]
    content {
      sid       = "RegistryLogin"
      actions   = ["ecr:GetAuthorizationToken"]
      resources = ["*"]
    }
  }
}

data "aws_iam_policy_document" "control" {
  statement {
    sid       = "PresignOutputs"
    actions   = ["s3:GetObject"]
    resources = ["${aws_s3_bucket.objects.arn}/${local.prefix}/jobs/*"]
  }
  statement {
    sid       = "ListPrefixOnly"
    actions   = ["s3:ListBucket"]
    resources = [aws_s3_bucket.objects.arn]
    condition {
      test     = "StringLike"
      variable = "s3:prefix"
      values   = ["${local.prefix}/*"]
    }
  }
  statement {
    sid       = "DecryptOutputs"
    actions   = ["kms:Decrypt"]
    resources = [aws_kms_key.sdqueue.arn]
  }
  statement {
    sid       = "RedisUrl"
    actions   = ["secretsmanager:GetSecretValue"]
    resources = [aws_secretsmanager_secret.redis_url.arn]
  }
  statement {
    sid       = "RaiseWorkerCapacity"
    actions   = ["autoscaling:SetDesiredCapacity"]
    resources = [aws_autoscaling_group.workers.arn]
    condition {
      test     = "StringEquals"
      variable = "autoscaling:ResourceTag/sdqueue:group"
      values   = [local.worker_group_name]
    }
  }
  statement {
    # Describe calls support no resource-level permissions in IAM: "*" is the narrowest resource AWS accepts.
    sid       = "ReadWorkerGroup"
    actions   = ["autoscaling:DescribeAutoScalingGroups"]
    resources = ["*"]
  }

  dynamic "statement" {
    for_each = var.ecr_repository_arn == null ? [] : [var.ecr_repository_arn]
    content {
      sid       = "PullTheImage"
      actions   = ["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer", "ecr:BatchCheckLayerAvailability"]
      resources = [statement.value]
    }
  }
  dynamic "statement" {
    # ECR issues registry tokens account-wide: IAM accepts no narrower resource for this one call.
    for_each = var.ecr_repository_arn == null ? [] : [var.ecr_repository_arn]
    content {
      sid       = "RegistryLogin"
      actions   = ["ecr:GetAuthorizationToken"]
      resources = ["*"]
    }
  }
}

resource "aws_iam_role" "worker" {
  name_prefix        = "${var.name}-worker-"
  assume_role_policy = data.aws_iam_policy_document.ec2_assume.json
}

resource "aws_iam_role_policy" "worker" {
  name   = "sdqueue-worker"
  role   = aws_iam_role.worker.id
  policy = data.aws_iam_policy_document.worker.json
}

resource "aws_iam_instance_profile" "worker" {
  name_prefix = "${var.name}-worker-"
  role        = aws_iam_role.worker.name
}

resource "aws_iam_role" "control" {
  name_prefix        = "${var.name}-control-"
  assume_role_policy = data.aws_iam_policy_document.ec2_assume.json
}

resource "aws_iam_role_policy" "control" {
  name   = "sdqueue-control"
  role   = aws_iam_role.control.id
  policy = data.aws_iam_policy_document.control.json
}

resource "aws_iam_instance_profile" "control" {
  name_prefix = "${var.name}-control-"
  role        = aws_iam_role.control.name
}
