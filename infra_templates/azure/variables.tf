variable "subscription_id" {
  description = "Azure subscription to deploy into."
  type        = string
}

variable "location" {
  description = "Azure region for every resource."
  type        = string
}

variable "name" {
  description = "Prefix of every resource name (lowercase letters and digits; storage accounts allow nothing else)."
  type        = string
  default     = "sdqueue"
}

variable "address_space" {
  description = "Address space of the sdqueue virtual network."
  type        = string
  default     = "10.42.0.0/16"
}

variable "api_ingress_cidrs" {
  description = "CIDRs allowed to reach the API port (your gateway). Empty = the virtual network only."
  type        = list(string)
  default     = []
}

variable "deployer_cidrs" {
  description = "Public CIDRs of the machine running Terraform: the Key Vault firewall admits them to write the Redis secret."
  type        = list(string)
  default     = []
}

variable "admin_ssh_public_key" {
  description = "Azure Linux VMs require an admin key. No port 22 is open anywhere; use Bastion or serial console with it."
  type        = string
}

variable "image" {
  description = "The sdqueue container image (built from the repository's Dockerfile), pinned by tag or digest."
  type        = string
}

variable "worker_vm_size" {
  description = "Spot GPU VM size. NVMe local disks are used when present (e.g. NC A100 v4), otherwise the local temp SSD."
  type        = string
  default     = "Standard_NC4as_T4_v3"
}

variable "worker_image" {
  description = "Worker OS image: needs the NVIDIA driver, Docker and the NVIDIA Container Toolkit (the Azure HPC images have them)."
  type = object({
    publisher = string
    offer     = string
    sku       = string
    version   = string
  })
  default = {
    publisher = "microsoft-dsvm"
    offer     = "ubuntu-hpc"
    sku       = "2204"
    version   = "latest"
  }
}

variable "control_vm_size" {
  description = "On-demand VM size running `sdq api` and `sdq controller`."
  type        = string
  default     = "Standard_B2s"
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
  description = "SDQ_IDLE_TIMEOUT_S: a worker idle this long drains and deletes its own scale set instance."
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
  description = "Blob name prefix inside the container."
  type        = string
  default     = "sdqueue"
}

variable "output_retention_days" {
  description = "Generated images are deleted after this many days."
  type        = number
  default     = 30
}

variable "checkpoint_retention_days" {
  description = "Spot-eviction checkpoints are deleted after this many days."
  type        = number
  default     = 1
}

variable "input_retention_days" {
  description = "Uploaded images (uploads/) and jobs' prepared inputs (inputs/) are deleted after this many days: at least SDQ_UPLOAD_TTL_S plus SDQ_JOB_TTL_S, so that a job queued with an upload before it expired still finds it."
  type        = number
  default     = 8
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
