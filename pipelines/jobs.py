"""The names of the jobs of the refresh chain (pipelines/definitions.py builds them; pipelines/refresh.py
plans their runs in the order the asset graph gives)."""

DATASETS_JOB = "datasets_job"
TRAIN_JOB = "train_job"
IMAGE_JOB = "image_job"
MODEL_LANG_JOB = "model_lang_job"
PAIRED_JOB = "paired_job"
PARTITION_REPORT_JOB = "partition_report_job"
SUMMARY_JOB = "model_summary_job"
REPORTS_JOB = "reports_job"
