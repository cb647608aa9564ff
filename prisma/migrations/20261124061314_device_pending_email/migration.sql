-- AlterTable
ALTER TABLE "devices" ADD COLUMN     "pending_email" TEXT;
