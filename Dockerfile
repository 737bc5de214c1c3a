# The rebalancing service. Built by docker-compose.yml; runs `rebalancer run`.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY service ./service
COPY consumers ./consumers
COPY config ./config
COPY schemas ./schemas
RUN pip install --no-cache-dir .
ENV REBALANCER_HTTP_HOST=0.0.0.0
# the service's port; `rebalancer execute` (an execution node) serves on 8081
EXPOSE 8080 8081
ENTRYPOINT ["rebalancer"]
CMD ["run"]
