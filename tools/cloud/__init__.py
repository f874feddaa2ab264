"""The Huawei Cloud ECS v1 client: signing, configuration, models, errors and the async client."""
