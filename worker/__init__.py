"""The Celery worker: runs a job's pipeline, builds its SEG and SR, and delivers them."""
