-- CreateTable
CREATE TABLE "certificates" (
    "id" UUID NOT NULL,
    "account_id" UUID NOT NULL,
    "device_id" UUID,
    "serial" TEXT NOT NULL,
    "subject" TEXT NOT NULL,
    "fingerprint" TEXT NOT NULL,
    "not_before" TIMESTAMPTZ(3) NOT NULL,
    "not_after" TIMESTAMPTZ(3) NOT NULL,
    "revoked_at" TIMESTAMPTZ(3),
    "reason" TEXT,
    "certificate_pem" TEXT NOT NULL,
    "pkcs12" BYTEA NOT NULL,
    "download_password_enc" TEXT NOT NULL,
    "created_at" TIMESTAMPTZ(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,

    CONSTRAINT "certificates_pkey" PRIMARY KEY ("id")
);

-- CreateIndex
CREATE UNIQUE INDEX "certificates_serial_key" ON "certificates"("serial");

-- CreateIndex
CREATE UNIQUE INDEX "certificates_fingerprint_key" ON "certificates"("fingerprint");

-- CreateIndex
CREATE INDEX "certificates_account_id_idx" ON "certificates"("account_id");

-- CreateIndex
CREATE INDEX "certificates_device_id_idx" ON "certificates"("device_id");

-- AddForeignKey
ALTER TABLE "certificates" ADD CONSTRAINT "certificates_account_id_fkey" FOREIGN KEY ("account_id") REFERENCES "accounts"("id") ON DELETE CASCADE ON UPDATE CASCADE;

-- AddForeignKey
ALTER TABLE "certificates" ADD CONSTRAINT "certificates_device_id_fkey" FOREIGN KEY ("device_id") REFERENCES "devices"("id") ON DELETE SET NULL ON UPDATE CASCADE;
