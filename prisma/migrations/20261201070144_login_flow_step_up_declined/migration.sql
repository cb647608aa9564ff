-- AlterTable
ALTER TABLE "login_flows" ADD COLUMN     "step_up_declined" BOOLEAN NOT NULL DEFAULT false;
