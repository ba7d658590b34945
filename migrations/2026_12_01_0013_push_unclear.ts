/**
 * An STK push that got no clear answer (timeout, a bare 5xx) ends its attempt, yet the prompt
 * may be on the customer's phone: a new prompt for the invoice must wait 2 minutes from that
 * push, as it would for a pending one. Only a definite refusal by Daraja ends the wait at once,
 * so the attempt records which of the two it was. Frozen in time: never import app code here.
 */
import { sql, type Kysely } from 'kysely';

export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`alter table payment_attempts add column push_unclear boolean not null default false`.execute(db);
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`alter table payment_attempts drop column push_unclear`.execute(db);
}
