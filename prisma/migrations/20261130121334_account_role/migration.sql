-- Staff of a tenant's support desk: support or admin may sign in to the support console (/console/);
-- NULL is an ordinary account.
-- CreateEnum
CREATE TYPE "AccountRole" AS ENUM ('support', 'admin');

-- AlterTable
ALTER TABLE "accounts" ADD COLUMN     "role" "AccountRole";
