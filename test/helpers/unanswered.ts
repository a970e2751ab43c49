/**
 * A command sent to an instance that cannot answer (stopped, paused, cut off, its replies held):
 * `answered` turns true only once it settles. Sent just before a lock call, still unanswered when
 * the call returned, it shows the call did not wait for that instance, whatever the machine's speed
 * (rather than "it took less than N ms").
 */
export function unanswered(command: Promise<unknown>): { readonly answered: boolean } {
  const probe = { answered: false };
  const settle = () => {
    probe.answered = true;
  };
  command.then(settle, settle);
  return probe;
}
