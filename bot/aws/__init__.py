"""AWS: thin typed gateways over boto3 (ECR, ECS and the ALB's routing in `gateways`, CodeBuild in
`codebuild`). Each call runs in a thread; `ClientError` never leaves this package: it becomes an
`AwsError` whose message says what to do."""
