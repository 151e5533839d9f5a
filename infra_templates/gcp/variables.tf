variable "project" {
  description = "GCP project to deploy into (Compute, Memorystore, Secret Manager and Cloud KMS APIs enabled)."
  type        = string
}

variable "region" {
  description = "Region for every resource; the worker group spreads over its zones."
  type        = string
}

variable "name" {
  description = "Prefix of every resource name (lowercase letters, digits, dashes)."
  type        = string
  default     = "sdqueue"
}

variable "subnet_cidr" {
  description = "CIDR of the sdqueue subnet."
  type        = string
  default     = "10.42.0.0/20"
}

variable "api_ingress_cidrs" {
  description = "CIDRs allowed to reach the API port (your gateway or load balancer). Empty = the subnet only."
  type        = list(string)
  default     = []
}

variable "image" {
  description = "The sdqueue container image (built from the repository's Dockerfile), pinned by tag or digest."
  type        = string
}

variable "worker_machine_type" {
  description = "Spot GPU machine type; G2 carries NVIDIA L4 GPUs and takes local NVMe SSDs."
  type        = string
  default     = "g2-standard-8"
}

variable "worker_gpu" {
  description = "GPU type and count attached to each worker."
  type = object({
    type  = string
    count = number
  })
  default = {
    type  = "nvidia-l4"
    count = 1
  }
}

variable "worker_zones" {
  description = "Zones the GPU group spreads over: those of the region that offer `worker_gpu`. Empty = every zone that is up."
  type        = list(string)
  default     = []
}

variable "worker_local_ssd_count" {
  description = "Local NVMe SSDs (375 GB each) striped for the model cache."
  type        = number
  default     = 1
}

variable "worker_boot_image" {
  description = "Worker boot image: needs the NVIDIA driver, Docker and the NVIDIA Container Toolkit (Deep Learning VM images)."
  type        = string
  default     = "projects/deeplearning-platform-release/global/images/family/common-cu124-debian-11-py310"
}

variable "control_machine_type" {
  description = "On-demand machine type running `sdq api` and `sdq controller`."
  type        = string
  default     = "e2-small"
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
  description = "SDQ_IDLE_TIMEOUT_S: a worker idle this long drains and deletes itself from the managed instance group."
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
  description = "Object name prefix inside the bucket; the service accounts may touch nothing outside it."
  type        = string
  default     = "sdqueue"
}

variable "output_retention_days" {
  description = "Generated images are deleted after this many days."
  type        = number
  default     = 30
}

variable "checkpoint_retention_days" {
  description = "Spot-preemption checkpoints are deleted after this many days."
  type        = number
  default     = 1
}

variable "input_retention_days" {
  description = "Uploaded images (uploads/) and jobs' prepared inputs (inputs/) are deleted after this many days: at least SDQ_UPLOAD_TTL_S plus SDQ_JOB_TTL_S, so that a job queued with an upload before it expired still finds it."
  type        = number
  default     = 8
}

variable "redis_memory_gb" {
  description = "Memorystore capacity."
  type        = number
  default     = 1
}

variable "labels" {
  description = "Labels added to every resource that takes them."
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
