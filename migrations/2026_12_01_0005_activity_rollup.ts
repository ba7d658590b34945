/**
 * Per-day activity rollups behind the all-merchant daily series of the dashboard
 * (`/stats/daily`): invoices sent, invoices paid and the amount collected per Nairobi day of
 * sending or paying. Without them the series reads every invoice sent or paid in the period
 * (over a second at a million invoices). Same shape as 0004: a trigger on invoices appends
 * deltas in the writer's transaction (the old contribution subtracted, the new one added),
 * the stats-fold job folds them, and a reader sums both. Frozen in time: never import app code.
 */
import { sql, type Kysely } from 'kysely';

/** The Nairobi (UTC+3 all year) calendar day of a timestamptz, whatever the session's time zone. */
const dayOf = (column: string) => `((${column} at time zone 'UTC') + interval '3 hours')::date`;
const nairobiDay = (column: string) => sql.raw(dayOf(column));

const contributions = (row: 'old' | 'new', sign: '-' | '') => sql.raw(`
        if ${row}.sent_at is not null then
          insert into invoice_activity_delta (day, sent, paid, collected) values (${dayOf(`${row}.sent_at`)}, ${sign}1, 0, 0);
        end if;
        if ${row}.status = 'paid' and ${row}.paid_at is not null then
          insert into invoice_activity_delta (day, sent, paid, collected) values (${dayOf(`${row}.paid_at`)}, 0, ${sign}1, ${sign}${row}.amount);
        end if;`);

export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`create table invoice_activity_daily (day date primary key, sent bigint not null, paid bigint not null, collected bigint not null)`.execute(db);
  await sql`create table invoice_activity_delta (day date not null, sent bigint not null, paid bigint not null, collected bigint not null)`.execute(db);

  await sql`
    create function invoice_activity_track() returns trigger language plpgsql as $$
    begin
      if tg_op in ('UPDATE', 'DELETE') then${contributions('old', '-')}
      end if;
      if tg_op in ('INSERT', 'UPDATE') then${contributions('new', '')}
      end if;
      return null;
    end $$`.execute(db);
  await sql`
    create function invoice_activity_clear() returns trigger language plpgsql as $$
    begin
      truncate invoice_activity_daily, invoice_activity_delta;
      return null;
    end $$`.execute(db);
  await sql`create trigger invoices_activity_insert_delete after insert or delete on invoices for each row execute function invoice_activity_track()`.execute(db);
  await sql`
    create trigger invoices_activity_update after update on invoices for each row
    when ((old.status, old.amount, old.sent_at, old.paid_at) is distinct from (new.status, new.amount, new.sent_at, new.paid_at))
    execute function invoice_activity_track()`.execute(db);
  await sql`create trigger invoices_activity_truncate after truncate on invoices for each statement execute function invoice_activity_clear()`.execute(db);

  // What already exists, in one pass.
  await sql`
    insert into invoice_activity_daily (day, sent, paid, collected)
    select day, sum(sent), sum(paid), sum(collected) from (
      select ${nairobiDay('sent_at')} as day, 1 as sent, 0 as paid, 0 as collected from invoices where sent_at is not null
      union all
      select ${nairobiDay('paid_at')}, 0, 1, amount from invoices where status = 'paid' and paid_at is not null
    ) as f
    group by day`.execute(db);
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`drop trigger invoices_activity_truncate on invoices`.execute(db);
  await sql`drop trigger invoices_activity_update on invoices`.execute(db);
  await sql`drop trigger invoices_activity_insert_delete on invoices`.execute(db);
  await sql`drop function invoice_activity_clear()`.execute(db);
  await sql`drop function invoice_activity_track()`.execute(db);
  await sql`drop table invoice_activity_delta`.execute(db);
  await sql`drop table invoice_activity_daily`.execute(db);
}
