# The spot GPU worker group: minimum 0, every instance spot, local NVMe mounted at the model cache.
# Only the controller raises desired capacity; only idle workers lower it (by terminating themselves), so
# Terraform ignores desired capacity after creation and the group protects busy instances from scale-in.

resource "aws_launch_template" "worker" {
  name_prefix            = "${var.name}-worker-"
  image_id               = data.aws_ssm_parameter.worker_ami.value
  update_default_version = true
  ebs_optimized          = true
  vpc_security_group_ids = [aws_security_group.workers.id]
  user_data = base64encode(templatefile("${path.module}/templates/worker-cloud-init.yaml.tftpl", {
    image                = var.image
    ecr_registry         = local.ecr_registry
    region               = var.region
    redis_secret_arn     = aws_secretsmanager_secret.redis_url.arn
    storage_url          = local.storage_url
    default_model        = var.default_model
    idle_timeout_s       = var.idle_timeout_s
    model_cache_host_dir = local.model_cache_host_dir
  }))

  iam_instance_profile {
    arn = aws_iam_instance_profile.worker.arn
  }

  metadata_options {
    http_endpoint               = "enabled"
    http_tokens                 = "required" # IMDSv2 only
    http_put_response_hop_limit = 1
    instance_metadata_tags      = "disabled"
  }

  monitoring {
    enabled = true
  }

  block_device_mappings {
    device_name = "/dev/sda1"
    ebs {
      volume_size           = 100
      volume_type           = "gp3"
      encrypted             = true
      kms_key_id            = aws_kms_key.sdqueue.arn
      delete_on_termination = true
    }
  }

  tag_specifications {
    resource_type = "instance"
    tags          = { "Name" = "${var.name}-gpu-worker", "sdqueue:role" = "worker" }
  }
  tag_specifications {
    resource_type = "volume"
    tags          = { "Name" = "${var.name}-gpu-worker", "sdqueue:role" = "worker" }
  }
}

resource "aws_autoscaling_group" "workers" {
  name                  = local.worker_group_name
  vpc_zone_identifier   = var.private_subnet_ids
  min_size              = 0
  max_size              = var.max_workers
  desired_capacity      = 0
  protect_from_scale_in = true
  health_check_type     = "EC2"
  # AZ rebalancing would terminate busy workers to even out zones.
  suspended_processes = ["AZRebalance"]
  # Capacity rebalancing would also terminate them; the worker's spot watcher handles rebalance notices itself.
  capacity_rebalance = false

  mixed_instances_policy {
    instances_distribution {
      on_demand_base_capacity                  = 0
      on_demand_percentage_above_base_capacity = 0
      spot_allocation_strategy                 = "price-capacity-optimized"
    }
    launch_template {
      launch_template_specification {
        launch_template_id = aws_launch_template.worker.id
        version            = "$Latest"
      }
      dynamic "override" {
        for_each = var.worker_instance_types
        content {
          instance_type = override.value
        }
      }
    }
  }

  tag {
    key                 = "sdqueue:group"
    value               = local.worker_group_name
    propagate_at_launch = true
  }
  tag {
    key                 = "sdqueue:deployment"
    value               = var.name
    propagate_at_launch = true
  }

  lifecycle {
    ignore_changes = [desired_capacity]
  }
}
