output "queue_url" {
  description = "termguard run --queue-url"
  value       = aws_sqs_queue.queue.url
}

output "queue_arn" {
  value = aws_sqs_queue.queue.arn
}

output "dead_letter_queue_url" {
  value = aws_sqs_queue.dead_letter.url
}

output "dead_letter_queue_arn" {
  value = aws_sqs_queue.dead_letter.arn
}

output "role_arn" {
  description = "The ServiceAccount's eks.amazonaws.com/role-arn annotation"
  value       = aws_iam_role.termguard.arn
}
