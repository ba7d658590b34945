/**
 * The message a provider's report (a WhatsApp status, an SMS delivery report) is about, found
 * by the provider's id, or why not. The id is written when the send's answer is recorded
 * (sending -> sent, one statement), so while a send on that channel is in flight the report may
 * be that send's: `notYet` (kept and retried). Otherwise the id is looked up once more: each
 * statement sees what was committed before it ran (READ COMMITTED), so the send may have been
 * recorded between the first look-up and the in-flight check; nothing is in flight now, so a
 * look-up now finds it if it is ours at all. Still nothing: `notOurs`.
 */
export async function messageReportedOn<T>(
  find: () => Promise<T | undefined>,
  sendInFlight: () => Promise<boolean>,
  errors: { notYet: () => Error; notOurs: () => Error },
): Promise<T> {
  const first = await find();
  if (first !== undefined) return first;
  if (await sendInFlight()) throw errors.notYet();
  const again = await find();
  if (again === undefined) throw errors.notOurs();
  return again;
}
