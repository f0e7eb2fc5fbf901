"""Training: requests and run plans, the Lightning module and Trainer, and what runs around them
(resume, soups, lr-find, DDP, distillation, tuning)."""
