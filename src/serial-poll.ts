/**
 * Runs `poll` one at a time for the database-backed queues (mail outbox, webhook deliveries): a kick
 * while a poll runs asks for one more right after it, instead of a second poll in parallel (which
 * would claim with the same lease token and count the same room twice). A failed poll is reported
 * and the next kick tries again. After `stop()`, kicks do nothing; `idle()` waits for the poll in flight.
 */
export function serialPoll(poll: () => Promise<void>, onError: (err: unknown) => void) {
  let running: Promise<void> | undefined;
  let again = false;
  let stopped = false;

  function kick(): void {
    if (stopped) return;
    if (running) {
      again = true;
      return;
    }
    running = poll()
      .catch(onError)
      .finally(() => {
        running = undefined;
        if (again) {
          again = false;
          kick();
        }
      });
  }

  return {
    kick,
    stop(): void {
      stopped = true;
    },
    /** The poll in flight, if any (resolves once it is done). */
    idle(): Promise<void> {
      return running ?? Promise.resolve();
    },
  };
}
