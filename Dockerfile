# syntax=docker/dockerfile:1
# Multi-stage build: dependencies and the generated Prisma client in a build stage, then a slim,
# non-root runtime that runs the provider with tsx (the generated client imports .ts files).

FROM node:22-bookworm-slim AS build
WORKDIR /app
COPY package.json package-lock.json ./
COPY scripts ./scripts
COPY prisma ./prisma
RUN npm ci --no-audit --no-fund && node scripts/prisma-generate.mjs
COPY tsconfig.json ./
COPY src ./src
RUN npx tsc --noEmit && npm prune --omit=dev

FROM node:22-bookworm-slim AS runtime
ENV NODE_ENV=production \
    PORT=3000 \
    DATA_DIR=/data
WORKDIR /app
RUN groupadd --system idp && useradd --system --gid idp --home /app idp \
    && mkdir -p /data && chown idp:idp /data
COPY --from=build --chown=idp:idp /app/node_modules ./node_modules
COPY --from=build --chown=idp:idp /app/src ./src
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
# JWKS_FILE, COOKIE_KEYS, OTP_HMAC_KEY, SMTP_URL, and usually REDIS_URL. See README.
CMD ["node", "--import", "tsx", "src/main.ts"]
