-- CreateEnum
CREATE TYPE "AccountStatus" AS ENUM ('pending_activation', 'active');

-- CreateEnum
CREATE TYPE "DeviceKind" AS ENUM ('pc', 'mobile', 'smartphone');

-- CreateTable
CREATE TABLE "accounts" (
    "id" UUID NOT NULL,
    "tenant_id" TEXT NOT NULL,
    "user_id" TEXT NOT NULL,
    "status" "AccountStatus" NOT NULL DEFAULT 'active',
    "login_method" TEXT NOT NULL DEFAULT 'otp',
    "failed_attempts" INTEGER NOT NULL DEFAULT 0,
    "locked_at" TIMESTAMPTZ(3),
    "password_hash" TEXT,
    "secret_question_id" TEXT,
    "secret_answer_hash" TEXT,
    "locale" TEXT,
    "last_login_at" TIMESTAMPTZ(3),
    "last_login_ip" TEXT,
    "created_at" TIMESTAMPTZ(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "updated_at" TIMESTAMPTZ(3) NOT NULL,

    CONSTRAINT "accounts_pkey" PRIMARY KEY ("id")
);

-- CreateTable
CREATE TABLE "devices" (
    "id" UUID NOT NULL,
    "account_id" UUID NOT NULL,
    "number" INTEGER NOT NULL,
    "email" TEXT NOT NULL,
    "kind" "DeviceKind" NOT NULL DEFAULT 'pc',
    "verified_at" TIMESTAMPTZ(3),
    "created_at" TIMESTAMPTZ(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,

    CONSTRAINT "devices_pkey" PRIMARY KEY ("id")
);

-- CreateTable
CREATE TABLE "login_flows" (
    "id" UUID NOT NULL,
    "interaction_uid" TEXT NOT NULL,
    "tenant_id" TEXT NOT NULL,
    "client_id" TEXT NOT NULL,
    "account_id" UUID,
    "submitted_user_id" TEXT,
    "method" TEXT,
    "completed_factors" TEXT[] DEFAULT ARRAY[]::TEXT[],
    "state" TEXT NOT NULL DEFAULT 'identify',
    "expires_at" TIMESTAMPTZ(3) NOT NULL,
    "created_at" TIMESTAMPTZ(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "updated_at" TIMESTAMPTZ(3) NOT NULL,

    CONSTRAINT "login_flows_pkey" PRIMARY KEY ("id")
);

-- CreateTable
CREATE TABLE "one_time_passwords" (
    "id" UUID NOT NULL,
    "flow_id" UUID,
    "account_id" UUID,
    "purpose" TEXT NOT NULL,
    "code_hmac" TEXT NOT NULL,
    "expires_at" TIMESTAMPTZ(3) NOT NULL,
    "consumed_at" TIMESTAMPTZ(3),
    "created_at" TIMESTAMPTZ(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,

    CONSTRAINT "one_time_passwords_pkey" PRIMARY KEY ("id")
);

-- CreateTable
CREATE TABLE "login_events" (
    "id" UUID NOT NULL,
    "tenant_id" TEXT NOT NULL,
    "account_id" UUID,
    "submitted_user_id" TEXT,
    "client_id" TEXT,
    "method" TEXT,
    "result" TEXT NOT NULL,
    "source_ip" TEXT,
    "user_agent" TEXT,
    "created_at" TIMESTAMPTZ(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,

    CONSTRAINT "login_events_pkey" PRIMARY KEY ("id")
);

-- CreateTable
CREATE TABLE "oidc_payloads" (
    "id" VARCHAR(255) NOT NULL,
    "type" VARCHAR(64) NOT NULL,
    "payload" JSONB NOT NULL,
    "grant_id" TEXT,
    "user_code" TEXT,
    "uid" TEXT,
    "expires_at" TIMESTAMPTZ(3),
    "consumed_at" TIMESTAMPTZ(3),

    CONSTRAINT "oidc_payloads_pkey" PRIMARY KEY ("id","type")
);

-- CreateTable
CREATE TABLE "dev_mails" (
    "id" UUID NOT NULL,
    "to" TEXT NOT NULL,
    "subject" TEXT NOT NULL,
    "text" TEXT NOT NULL,
    "html" TEXT,
    "created_at" TIMESTAMPTZ(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,

    CONSTRAINT "dev_mails_pkey" PRIMARY KEY ("id")
);

-- CreateIndex
CREATE UNIQUE INDEX "accounts_tenant_id_user_id_key" ON "accounts"("tenant_id", "user_id");

-- CreateIndex
CREATE UNIQUE INDEX "devices_account_id_number_key" ON "devices"("account_id", "number");

-- CreateIndex
CREATE UNIQUE INDEX "login_flows_interaction_uid_key" ON "login_flows"("interaction_uid");

-- CreateIndex
CREATE INDEX "login_flows_expires_at_idx" ON "login_flows"("expires_at");

-- CreateIndex
CREATE INDEX "one_time_passwords_flow_id_idx" ON "one_time_passwords"("flow_id");

-- CreateIndex
CREATE INDEX "one_time_passwords_account_id_purpose_idx" ON "one_time_passwords"("account_id", "purpose");

-- CreateIndex
CREATE INDEX "login_events_account_id_created_at_idx" ON "login_events"("account_id", "created_at");

-- CreateIndex
CREATE INDEX "login_events_created_at_idx" ON "login_events"("created_at");

-- CreateIndex
CREATE INDEX "oidc_payloads_grant_id_idx" ON "oidc_payloads"("grant_id");

-- CreateIndex
CREATE INDEX "oidc_payloads_uid_idx" ON "oidc_payloads"("uid");

-- CreateIndex
CREATE INDEX "oidc_payloads_user_code_idx" ON "oidc_payloads"("user_code");

-- CreateIndex
CREATE INDEX "oidc_payloads_expires_at_idx" ON "oidc_payloads"("expires_at");

-- CreateIndex
CREATE INDEX "dev_mails_created_at_idx" ON "dev_mails"("created_at");

-- AddForeignKey
ALTER TABLE "devices" ADD CONSTRAINT "devices_account_id_fkey" FOREIGN KEY ("account_id") REFERENCES "accounts"("id") ON DELETE CASCADE ON UPDATE CASCADE;

-- AddForeignKey
ALTER TABLE "login_flows" ADD CONSTRAINT "login_flows_account_id_fkey" FOREIGN KEY ("account_id") REFERENCES "accounts"("id") ON DELETE CASCADE ON UPDATE CASCADE;

-- AddForeignKey
ALTER TABLE "one_time_passwords" ADD CONSTRAINT "one_time_passwords_flow_id_fkey" FOREIGN KEY ("flow_id") REFERENCES "login_flows"("id") ON DELETE CASCADE ON UPDATE CASCADE;

-- AddForeignKey
ALTER TABLE "login_events" ADD CONSTRAINT "login_events_account_id_fkey" FOREIGN KEY ("account_id") REFERENCES "accounts"("id") ON DELETE CASCADE ON UPDATE CASCADE;
