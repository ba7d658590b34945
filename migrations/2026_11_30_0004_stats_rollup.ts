/**
 * Per-day rollups behind the all-merchant /stats/summary, so it reads a few hundred rows per
 * period instead of every invoice. Frozen in time: never import app code here.
 *
 * - invoice_stats_daily: the figures of every invoice, summed per Nairobi day of creation,
 *   status and due date (the overdue count needs it; 'infinity' stands for none).
 * - invoice_stats_delta: append-only changes written by a trigger on invoices in the same
 *   transaction as the change (a row's old contribution subtracted, its new one added), so
 *   writers never contend on a rollup row. A job folds the deltas into the daily table; a
 *   reader sums both in one statement, so the figures are exact at every moment.
 */
import { sql, type Kysely } from 'kysely';

const figures = (row: 'old' | 'new', sign: '-' | '') => sql.raw(`
      ((${row}.created_at at time zone 'UTC') + interval '3 hours')::date,
      ${row}.status,
      coalesce(${row}.due_date, 'infinity'::date),
      ${sign}1,
      ${sign}${row}.amount,
      ${sign}(${row}.sent_at is not null)::int,
      ${sign}(${row}.sent_at is not null and ${row}.status = 'paid')::int,
      ${sign}(case when ${row}.status = 'paid' and ${row}.sent_at is not null and ${row}.paid_at is not null
              then extract(epoch from ${row}.paid_at - ${row}.sent_at) else 0 end),
      ${sign}(${row}.status = 'paid' and ${row}.sent_at is not null and ${row}.paid_at is not null)::int`);

const columns = sql.raw('day, status, due_date, invoices, amount, ever_sent, paid_after_sent, pay_seconds, pay_count');

export async function up(db: Kysely<unknown>): Promise<void> {
  for (const table of ['invoice_stats_daily', 'invoice_stats_delta']) {
    await sql`
      create table ${sql.table(table)} (
        day date not null,
        status text not null,
        due_date date not null,
        invoices bigint not null,
        amount bigint not null,
        ever_sent bigint not null,
        paid_after_sent bigint not null,
        pay_seconds numeric not null,
        pay_count bigint not null
      )`.execute(db);
  }
  await sql`alter table invoice_stats_daily add primary key (day, status, due_date)`.execute(db);

  await sql`
    create function invoice_stats_track() returns trigger language plpgsql as $$
    begin
      if tg_op in ('UPDATE', 'DELETE') then
        insert into invoice_stats_delta (${columns}) values (${figures('old', '-')});
      end if;
      if tg_op in ('INSERT', 'UPDATE') then
        insert into invoice_stats_delta (${columns}) values (${figures('new', '')});
      end if;
      return null;
    end $$`.execute(db);
  await sql`
    create function invoice_stats_clear() returns trigger language plpgsql as $$
    begin
      truncate invoice_stats_daily, invoice_stats_delta;
      return null;
    end $$`.execute(db);
  await sql`create trigger invoices_stats_insert_delete after insert or delete on invoices for each row execute function invoice_stats_track()`.execute(db);
  await sql`
    create trigger invoices_stats_update after update on invoices for each row
    when ((old.status, old.amount, old.created_at, old.sent_at, old.paid_at, old.due_date)
          is distinct from (new.status, new.amount, new.created_at, new.sent_at, new.paid_at, new.due_date))
    execute function invoice_stats_track()`.execute(db);
  await sql`create trigger invoices_stats_truncate after truncate on invoices for each statement execute function invoice_stats_clear()`.execute(db);

  // What already exists, in one pass.
  await sql`
    insert into invoice_stats_daily (${columns})
    select day, status, due_date, sum(invoices), sum(amount), sum(ever_sent), sum(paid_after_sent), sum(pay_seconds), sum(pay_count)
    from (select ${figures('new', '')} from invoices as new) as f (${columns})
    group by day, status, due_date`.execute(db);
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`drop trigger invoices_stats_truncate on invoices`.execute(db);
  await sql`drop trigger invoices_stats_update on invoices`.execute(db);
  await sql`drop trigger invoices_stats_insert_delete on invoices`.execute(db);
  await sql`drop function invoice_stats_clear()`.execute(db);
  await sql`drop function invoice_stats_track()`.execute(db);
  await sql`drop table invoice_stats_delta`.execute(db);
  await sql`drop table invoice_stats_daily`.execute(db);
}
