# syntax=docker/dockerfile:1
# Multi-stage build: compile TypeScript (with the generated Prisma client) to dist/ in a build stage,
# install production dependencies alone in another, and run `node dist/main.js` in a slim, non-root
# runtime that holds neither TypeScript nor the development packages.

FROM node:22-bookworm-slim AS build
WORKDIR /app
COPY package.json package-lock.json ./
COPY scripts ./scripts
COPY prisma ./prisma
RUN npm ci --no-audit --no-fund && node scripts/prisma-generate.mjs
COPY tsconfig.json tsconfig.build.json ./
COPY src ./src
RUN npx tsc --noEmit && npm run build

FROM node:22-bookworm-slim AS deps
WORKDIR /app
COPY package.json package-lock.json ./
COPY scripts/prune-production.mjs ./scripts/
# No install scripts: the one the project has generates the Prisma client, which dist/ already holds.
# Then the optional peers npm adds (the prisma CLI, typescript: about 270 MB) go, as in the production test.
RUN npm ci --omit=dev --ignore-scripts --no-audit --no-fund && node scripts/prune-production.mjs

FROM node:22-bookworm-slim AS runtime
# MALLOC_ARENA_MAX: see "Memory" in the README (bounds glibc's per-thread arenas, which otherwise
# keep tens of MiB that V8's and libuv's threads freed).
ENV NODE_ENV=production \
    PORT=3000 \
    DATA_DIR=/data \
    MALLOC_ARENA_MAX=2
WORKDIR /app
RUN groupadd --system idp && useradd --system --gid idp --home /app idp \
    && mkdir -p /data && chown idp:idp /data
COPY --from=deps --chown=idp:idp /app/node_modules ./node_modules
COPY --from=build --chown=idp:idp /app/dist ./dist
COPY --chown=idp:idp package.json ./
COPY --chown=idp:idp prisma ./prisma
COPY --chown=idp:idp views ./views
COPY --chown=idp:idp public ./public
COPY --chown=idp:idp config ./config
USER idp
EXPOSE 3000
VOLUME ["/data"]
HEALTHCHECK --interval=30s --timeout=3s --start-period=20s CMD node -e "fetch('http://127.0.0.1:'+(process.env.PORT||3000)+'/health').then(r=>process.exit(r.ok?0:1)).catch(()=>process.exit(1))"
# Production needs DATABASE_URL (or a /data volume for the embedded database), ISSUER, JWKS or
# JWKS_FILE, COOKIE_KEYS, OTP_HMAC_KEY, SMTP_URL, and usually REDIS_URL; WEB_CONCURRENCY forks that
# many HTTP workers (PostgreSQL only). See README. The V8 flags are explained there too ("Memory").
CMD ["node", "--max-semi-space-size=8", "--heap-growing-percent=30", "dist/main.js"]
