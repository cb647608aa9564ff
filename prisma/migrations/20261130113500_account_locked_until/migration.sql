-- A temporary lock (the contract's lockout.duration_minutes) lifts at locked_until; NULL with
-- locked_at set is a permanent lock, as every lock was before.
-- AlterTable
ALTER TABLE "accounts" ADD COLUMN     "locked_until" TIMESTAMPTZ(3);
