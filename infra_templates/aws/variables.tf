variable "region" {
  description = "AWS region for every resource."
  type        = string
}

variable "name" {
  description = "Prefix of every resource name; also the Auto Scaling group's name suffix."
  type        = string
  default     = "sdqueue"
}

variable "vpc_id" {
  description = "VPC to deploy into."
  type        = string
}

variable "private_subnet_ids" {
  description = "Private subnets (one per AZ, with NAT egress) for workers, the control instance and Redis."
  type        = list(string)
}

variable "api_ingress_cidrs" {
  description = "CIDRs allowed to reach the API on its port (put your gateway/load balancer here). Empty = the VPC CIDR."
  type        = list(string)
  default     = []
}

variable "image" {
  description = "The sdqueue container image (built from the repository's Dockerfile), pinned by tag or digest."
  type        = string
}

variable "ecr_repository_arn" {
  description = "ARN of the ECR repository holding `image`, if it is in ECR: the roles may pull from it (and only it)."
  type        = string
  default     = null
}

variable "worker_instance_types" {
  description = "Spot GPU instance types the worker group may use; all must have local NVMe instance store (the model cache)."
  type        = list(string)
  default     = ["g6.xlarge", "g5.xlarge", "g6.2xlarge", "g5.2xlarge", "g4dn.xlarge"]
}

variable "worker_ami_ssm_parameter" {
  description = "SSM parameter holding the worker AMI: needs the NVIDIA driver, Docker and the NVIDIA Container Toolkit."
  type        = string
  default     = "/aws/service/deeplearning/ami/x86_64/base-oss-nvidia-driver-gpu-ubuntu-22.04/latest/ami-id"
}

variable "control_instance_type" {
  description = "On-demand instance type running `sdq api` and `sdq controller`."
  type        = string
  default     = "t3.small"
}

variable "max_workers" {
  description = "Upper bound of GPU workers (the controller never asks for more)."
  type        = number
  default     = 4
}

variable "prices" {
  description = "SDQ_PRICES: USD per hour of each worker type, e.g. { \"g5.xlarge\" = { spot = 0.45, on_demand = 1.006 } }; prices each job's GPU time."
  type = map(object({
    spot      = number
    on_demand = number
  }))
  default = {}
}

variable "idle_timeout_s" {
  description = "SDQ_IDLE_TIMEOUT_S: a worker idle this long drains, retires its own instance and the group shrinks."
  type        = number
  default     = 900
}

variable "default_model" {
  description = "SDQ_DEFAULT_MODEL: model for jobs that name none."
  type        = string
  default     = "stable-diffusion-v1-5/stable-diffusion-v1-5"
}

variable "allowed_models" {
  description = "SDQ_ALLOWED_MODELS: models clients may ask for (empty = any)."
  type        = list(string)
  default     = ["stable-diffusion-v1-5/stable-diffusion-v1-5"]
}

variable "storage_prefix" {
  description = "Key prefix inside the bucket; the identities below may touch nothing outside it."
  type        = string
  default     = "sdqueue"
}

variable "output_retention_days" {
  description = "Generated images expire after this many days."
  type        = number
  default     = 30
}

variable "checkpoint_retention_days" {
  description = "Spot-interruption checkpoints expire after this many days (a resumed job needs them for minutes)."
  type        = number
  default     = 1
}

variable "input_retention_days" {
  description = "Uploaded images (uploads/) and jobs' prepared inputs (inputs/) are deleted after this many days: at least SDQ_UPLOAD_TTL_S plus SDQ_JOB_TTL_S, so that a job queued with an upload before it expired still finds it."
  type        = number
  default     = 8
}

variable "redis_node_type" {
  description = "ElastiCache node type."
  type        = string
  default     = "cache.t4g.small"
}

variable "tags" {
  description = "Tags added to every resource."
  type        = map(string)
  default     = {}
}

variable "dashboard_origins" {
  description = "Origins of the dashboard (e.g. [\"https://sdq.example.com\"]) allowed by a CORS rule on the bucket to upload input images straight to it (PUT/POST) and read results (GET/HEAD). Empty (the default): no CORS rule, and browsers cannot upload there; the API, the SDK, sdq and curl need none."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for origin in var.dashboard_origins : can(regex("^https?://[^/*\\s]+$", origin))])
    error_message = "dashboard_origins: each entry is a scheme and host (https://sdq.example.com, optionally :port), without a path or wildcard."
  }
}
