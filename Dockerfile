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
EXPOSE 8080
ENTRYPOINT ["rebalancer"]
CMD ["run"]
