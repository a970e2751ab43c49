/** A gate the test opens: a critical section (a handler, a stream's producer) that waits on `opened` ends only then. */
export function gate(): { open: () => void; opened: Promise<void> } {
  let open!: () => void;
  const opened = new Promise<void>((resolve) => {
    open = resolve;
  });
  return { open, opened };
}
