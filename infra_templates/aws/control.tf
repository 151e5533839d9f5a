# The control instance: `sdq api` and `sdq controller` on one small on-demand instance in a private subnet.

resource "aws_instance" "control" {
  ami                         = data.aws_ssm_parameter.control_ami.value
  instance_type               = var.control_instance_type
  subnet_id                   = var.private_subnet_ids[0]
  vpc_security_group_ids      = [aws_security_group.control.id]
  iam_instance_profile        = aws_iam_instance_profile.control.name
  associate_public_ip_address = false
  ebs_optimized               = true
  monitoring                  = true
  user_data_replace_on_change = true
  user_data = templatefile("${path.module}/templates/control-cloud-init.yaml.tftpl", {
    image             = var.image
    ecr_registry      = local.ecr_registry
    region            = var.region
    redis_secret_arn  = aws_secretsmanager_secret.redis_url.arn
    storage_url       = local.storage_url
    default_model     = var.default_model
    allowed_models    = join(",", var.allowed_models)
    api_port          = local.api_port
    idle_timeout_s    = var.idle_timeout_s
    worker_group_name = aws_autoscaling_group.workers.name
    max_workers       = var.max_workers
    prices_json       = jsonencode(var.prices)
  })

  metadata_options {
    http_endpoint               = "enabled"
    http_tokens                 = "required" # IMDSv2 only
    http_put_response_hop_limit = 1
  }

  root_block_device {
    volume_size = 20
    volume_type = "gp3"
    encrypted   = true
    kms_key_id  = aws_kms_key.sdqueue.arn
  }

  tags = { "Name" = "${var.name}-control", "sdqueue:role" = "control" }
}
