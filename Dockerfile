# key-portal: build stage compiles TypeScript and better-sqlite3; the runtime stage holds only what runs.
FROM node:20-bookworm-slim AS build
WORKDIR /app
# better-sqlite3 compiles SQLite where no prebuilt binary can be downloaded.
RUN apt-get update && apt-get install -y --no-install-recommends python3 make g++ && rm -rf /var/lib/apt/lists/*
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY tsconfig.json ./
COPY src src
COPY test test
COPY bin bin
RUN npx tsc -p . && npm prune --omit=dev

FROM node:20-bookworm-slim
ENV NODE_ENV=production DATA_DIR=/data HOST=0.0.0.0 PORT=8080
# glibc gives each thread that allocates (the usage writer, libuv's pool, V8's helpers) a malloc arena
# of its own, and their fragmentation shows as resident memory: two arenas keep a portal with 50k
# keys under 150 MB (measured by `npm run bench -- memory`).
ENV MALLOC_ARENA_MAX=2
WORKDIR /app
COPY --from=build /app/package.json ./
COPY --from=build /app/node_modules node_modules
COPY --from=build /app/dist/src dist/src
COPY bin bin
COPY views views
# Data lives in a volume owned by the unprivileged user the portal runs as.
RUN mkdir -p /data && chown node:node /data && chmod 700 /data
USER node
VOLUME ["/data"]
# 8080: pages and API; 8787: the gateway (when GATEWAY_PORT=8787).
EXPOSE 8080 8787
# Liveness: the process serves (a degraded portal — CLIProxyAPI unreachable — is still up; see /healthz).
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:'+(process.env.PORT||8080)+'/healthz?probe=live').then(r=>process.exit(r.ok?0:1),()=>process.exit(1))"]
CMD ["node", "--max-semi-space-size=4", "bin/key-portal", "start"]
