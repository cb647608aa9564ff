-- AlterTable
ALTER TABLE "audit_records" ADD COLUMN     "outcome" TEXT NOT NULL DEFAULT 'done',
ADD COLUMN     "error_code" TEXT;
