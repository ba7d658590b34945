/**
 * STK callbacks through the real route for the group-commit suites (test/payments-batch.test.ts,
 * test/callback-group-write-review.test.ts): an attempt seeded with a known token, its success
 * and 1032 bodies, how many groups the service has committed so far, and rows held locked by
 * another connection while callbacks come.
 */
import { callbackBody } from '../fakes/daraja.js';
import type { ChannelFixture } from './channel.js';

/** An attempt seeded in SQL with a known token (its hash stored, as the service does). */
export type SeededAttempt = { token: string; checkout: string; invoiceId: string; attemptId: string; customer: string };

export function callbackTo(f: ChannelFixture, token: string, body: unknown): Promise<Response> {
  return Promise.resolve(f.app.request(`/payments/stk/callback/${token}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) }));
}

export const paidBody = (a: SeededAttempt, receipt: string, amount = 100) =>
  callbackBody({ checkoutRequestId: a.checkout, merchantRequestId: `mr_${a.checkout}`, resultCode: 0, resultDesc: 'The service request is processed successfully.', amount, receipt, phone: a.customer });

export const declinedBody = (a: SeededAttempt) => callbackBody({ checkoutRequestId: a.checkout, merchantRequestId: `mr_${a.checkout}`, resultCode: 1032, resultDesc: 'Request cancelled by user' });

/** Group-commit transactions of callbacks, and callbacks in them, so far. */
export async function callbackGroups(f: ChannelFixture): Promise<{ transactions: number; callbacks: number }> {
  const metric = await f.deps.metrics.groupCommitSize.get();
  const mine = metric.values.filter((v) => v.labels.path === 'mpesa_callback');
  return {
    transactions: mine.find((v) => v.metricName === 'invoiceiq_group_commit_size_count')?.value ?? 0,
    callbacks: mine.find((v) => v.metricName === 'invoiceiq_group_commit_size_sum')?.value ?? 0,
  };
}

/**
 * Runs `during` while another connection (a reconciliation, another machine) holds the rows
 * `ids` of `table` locked (FOR UPDATE); they are let go when it ends, whatever it threw. On the
 * embedded database (one connection) the connection itself is held instead.
 */
export async function whileRowsHeld<T>(f: ChannelFixture, table: 'payment_attempts' | 'invoices', ids: readonly string[], during: () => Promise<T>): Promise<T> {
  const holder = await f.database.handle.pool.connect();
  try {
    await holder.query('begin');
    await holder.query(`select id from ${table} where id = any($1::uuid[]) for update`, [[...ids]]);
    return await during();
  } finally {
    await holder.query('rollback');
    holder.release();
  }
}

/**
 * The group suites' shorthands, over the fixture `fixture()` gives (the suite's, once its
 * before() has run): a callback through the route, the groups committed so far, an invoice's
 * status and receipt, an attempt's row.
 */
export function callbackSuite(fixture: () => ChannelFixture) {
  const db = () => fixture().database.handle.db;
  return {
    callback: (token: string, body: unknown) => callbackTo(fixture(), token, body),
    groups: () => callbackGroups(fixture()),
    invoice: (id: string) => db().selectFrom('invoices').select(['status', 'mpesa_receipt']).where('id', '=', id).executeTakeFirstOrThrow(),
    attempt: (id: string) => db().selectFrom('payment_attempts').selectAll().where('id', '=', id).executeTakeFirstOrThrow(),
  };
}
