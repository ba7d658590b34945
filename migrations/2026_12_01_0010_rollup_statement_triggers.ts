/**
 * The stats and activity rollups (0004, 0005) written once per statement instead of once per
 * row. Their row triggers made every changed invoice run two or three single-row inserts of
 * deltas; a group of 64 callbacks paying 64 invoices paid for 190 of them. Statement triggers
 * read the statement's transition tables and append the deltas already summed per rollup key
 * (a few rows), in the same transaction as the change, so readers stay exact. An update that
 * changes no tracked figure nets to zero and appends nothing, as the row triggers' WHEN did.
 * Transition tables allow one event per trigger: three triggers per rollup. Frozen in time:
 * never import app code here.
 */
import { sql, type Kysely } from 'kysely';

/** The Nairobi (UTC+3 all year) calendar day of a timestamptz, whatever the session's time zone. */
const dayOf = (column: string) => `((${column} at time zone 'UTC') + interval '3 hours')::date`;

/** One invoice's contribution to invoice_stats_delta, from rows aliased `r`, with `sign`. */
const statsFigures = (sign: '-' | '') => `
  ${dayOf('r.created_at')} as day, r.status, coalesce(r.due_date, 'infinity'::date) as due_date,
  ${sign}1 as invoices, ${sign}r.amount as amount,
  ${sign}(r.sent_at is not null)::int as ever_sent,
  ${sign}(r.sent_at is not null and r.status = 'paid')::int as paid_after_sent,
  ${sign}(case when r.status = 'paid' and r.sent_at is not null and r.paid_at is not null
          then extract(epoch from r.paid_at - r.sent_at) else 0 end) as pay_seconds,
  ${sign}(r.status = 'paid' and r.sent_at is not null and r.paid_at is not null)::int as pay_count`;

/** One invoice's contributions to invoice_activity_delta (sent by day sent, paid by day paid). */
const activityFigures = (rows: string, sign: '-' | '') => `
  select ${dayOf('r.sent_at')} as day, ${sign}1 as sent, 0 as paid, 0 as collected from ${rows} as r where r.sent_at is not null
  union all
  select ${dayOf('r.paid_at')}, 0, ${sign}1, ${sign}r.amount from ${rows} as r where r.status = 'paid' and r.paid_at is not null`;

/** Appends the summed deltas of `changes` (a union of contributions), dropping keys that net to zero. */
const appendStats = (changes: string) => `
  insert into invoice_stats_delta (day, status, due_date, invoices, amount, ever_sent, paid_after_sent, pay_seconds, pay_count)
  select day, status, due_date, sum(invoices), sum(amount), sum(ever_sent), sum(paid_after_sent), sum(pay_seconds), sum(pay_count)
  from (${changes}) as f
  group by day, status, due_date
  having sum(invoices) <> 0 or sum(amount) <> 0 or sum(ever_sent) <> 0 or sum(paid_after_sent) <> 0 or sum(pay_seconds) <> 0 or sum(pay_count) <> 0;`;

const appendActivity = (changes: string) => `
  insert into invoice_activity_delta (day, sent, paid, collected)
  select day, sum(sent), sum(paid), sum(collected)
  from (${changes}) as f
  group by day
  having sum(sent) <> 0 or sum(paid) <> 0 or sum(collected) <> 0;`;

export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`drop trigger invoices_stats_insert_delete on invoices`.execute(db);
  await sql`drop trigger invoices_stats_update on invoices`.execute(db);
  await sql`drop trigger invoices_activity_insert_delete on invoices`.execute(db);
  await sql`drop trigger invoices_activity_update on invoices`.execute(db);

  // OLD and NEW are plpgsql's own (unset in a statement trigger): the transition tables are
  // old_rows and new_rows, each row aliased r.
  await sql
    .raw(
      `create function invoice_rollups_track() returns trigger language plpgsql as $$
    begin
      if tg_op = 'INSERT' then
        ${appendStats(`select ${statsFigures('')} from new_rows as r`)}
        ${appendActivity(activityFigures('new_rows', ''))}
      elsif tg_op = 'DELETE' then
        ${appendStats(`select ${statsFigures('-')} from old_rows as r`)}
        ${appendActivity(activityFigures('old_rows', '-'))}
      else
        ${appendStats(`select ${statsFigures('-')} from old_rows as r union all select ${statsFigures('')} from new_rows as r`)}
        ${appendActivity(`${activityFigures('old_rows', '-')} union all ${activityFigures('new_rows', '')}`)}
      end if;
      return null;
    end $$`,
    )
    .execute(db);
  await sql`create trigger invoices_rollups_insert after insert on invoices referencing new table as new_rows for each statement execute function invoice_rollups_track()`.execute(db);
  await sql`create trigger invoices_rollups_update after update on invoices referencing old table as old_rows new table as new_rows for each statement execute function invoice_rollups_track()`.execute(db);
  await sql`create trigger invoices_rollups_delete after delete on invoices referencing old table as old_rows for each statement execute function invoice_rollups_track()`.execute(db);
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`drop trigger invoices_rollups_delete on invoices`.execute(db);
  await sql`drop trigger invoices_rollups_update on invoices`.execute(db);
  await sql`drop trigger invoices_rollups_insert on invoices`.execute(db);
  await sql`drop function invoice_rollups_track()`.execute(db);
  // The row triggers of 0004 and 0005, as they were (their functions were kept).
  await sql`create trigger invoices_stats_insert_delete after insert or delete on invoices for each row execute function invoice_stats_track()`.execute(db);
  await sql`
    create trigger invoices_stats_update after update on invoices for each row
    when ((old.status, old.amount, old.created_at, old.sent_at, old.paid_at, old.due_date)
          is distinct from (new.status, new.amount, new.created_at, new.sent_at, new.paid_at, new.due_date))
    execute function invoice_stats_track()`.execute(db);
  await sql`create trigger invoices_activity_insert_delete after insert or delete on invoices for each row execute function invoice_activity_track()`.execute(db);
  await sql`
    create trigger invoices_activity_update after update on invoices for each row
    when ((old.status, old.amount, old.sent_at, old.paid_at) is distinct from (new.status, new.amount, new.sent_at, new.paid_at))
    execute function invoice_activity_track()`.execute(db);
}
