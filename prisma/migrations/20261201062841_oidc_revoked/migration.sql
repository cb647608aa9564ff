-- CreateTable
CREATE TABLE "oidc_revoked" (
    "id" VARCHAR(255) NOT NULL,
    "type" VARCHAR(64) NOT NULL,
    "expires_at" TIMESTAMPTZ(3) NOT NULL,

    CONSTRAINT "oidc_revoked_pkey" PRIMARY KEY ("id","type")
);

-- CreateIndex
CREATE INDEX "oidc_revoked_expires_at_idx" ON "oidc_revoked"("expires_at");
