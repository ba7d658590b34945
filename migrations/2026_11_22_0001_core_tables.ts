/**
 * The core tables every capability stands on. Frozen in time: never import app code here.
 *
 * Conventions: money is an integer number of shillings (bigint); phone numbers are stored
 * normalised as 2547XXXXXXXX / 2541XXXXXXXX; every table has created_at; uniqueness that
 * protects money and messages from doubling is enforced by the database, not by code.
 */
import { sql, type Kysely } from 'kysely';

// Typed against `unknown`: a migration describes the schema as it was, not as the app's
// Database interface says it is today.
export async function up(db: Kysely<unknown>): Promise<void> {
  await db.schema
    .createTable('merchants')
    .addColumn('id', 'uuid', (c) => c.primaryKey().defaultTo(sql`gen_random_uuid()`))
    .addColumn('phone', 'text', (c) => c.notNull().unique())
    .addColumn('business_name', 'text')
    .addColumn('language', 'text', (c) => c.notNull().defaultTo('en').check(sql`language in ('en', 'sw')`))
    // The next invoice number to hand out: allocated with UPDATE ... RETURNING under the row
    // lock, so numbers are gapless and never duplicated even with concurrent requests.
    .addColumn('next_invoice_number', 'integer', (c) => c.notNull().defaultTo(1).check(sql`next_invoice_number >= 1`))
    .addColumn('created_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
    .addColumn('updated_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
    .execute();

  await db.schema
    .createTable('conversations')
    .addColumn('phone', 'text', (c) => c.primaryKey())
    .addColumn('state', 'jsonb', (c) => c.notNull())
    .addColumn('language', 'text', (c) => c.notNull().defaultTo('en').check(sql`language in ('en', 'sw')`))
    // Start of the WhatsApp 24-hour customer-service window.
    .addColumn('last_inbound_at', 'timestamptz')
    .addColumn('created_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
    .addColumn('updated_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
    .execute();

  await db.schema
    .createTable('invoices')
    .addColumn('id', 'uuid', (c) => c.primaryKey().defaultTo(sql`gen_random_uuid()`))
    .addColumn('merchant_id', 'uuid', (c) => c.notNull().references('merchants.id').onDelete('restrict'))
    .addColumn('number', 'integer', (c) => c.notNull().check(sql`number >= 1`))
    .addColumn('customer_phone', 'text', (c) => c.notNull())
    .addColumn('amount', 'bigint', (c) => c.notNull().check(sql`amount between 1 and 250000`))
    .addColumn('currency', 'text', (c) => c.notNull().defaultTo('KES').check(sql`currency = 'KES'`))
    .addColumn('description', 'text', (c) => c.notNull().check(sql`char_length(description) between 1 and 100`))
    .addColumn('status', 'text', (c) =>
      c.notNull().defaultTo('pending').check(sql`status in ('pending', 'sent', 'paid', 'failed', 'cancelled')`),
    )
    .addColumn('due_date', 'date')
    .addColumn('sent_at', 'timestamptz')
    .addColumn('paid_at', 'timestamptz')
    .addColumn('cancelled_at', 'timestamptz')
    .addColumn('mpesa_receipt', 'text', (c) => c.unique())
    .addColumn('created_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
    .addColumn('updated_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
    .addUniqueConstraint('invoices_merchant_number_key', ['merchant_id', 'number'])
    .execute();
  await db.schema.createIndex('invoices_merchant_status_idx').on('invoices').columns(['merchant_id', 'status']).execute();
  await db.schema.createIndex('invoices_customer_phone_idx').on('invoices').column('customer_phone').execute();

  await db.schema
    .createTable('payment_attempts')
    .addColumn('id', 'uuid', (c) => c.primaryKey().defaultTo(sql`gen_random_uuid()`))
    .addColumn('invoice_id', 'uuid', (c) => c.notNull().references('invoices.id').onDelete('restrict'))
    // Null until Daraja accepts the push and names it.
    .addColumn('checkout_request_id', 'text', (c) => c.unique())
    .addColumn('merchant_request_id', 'text')
    .addColumn('amount', 'bigint', (c) => c.notNull().check(sql`amount between 1 and 250000`))
    .addColumn('phone', 'text', (c) => c.notNull())
    // Only a hash of the per-attempt callback token is stored.
    .addColumn('callback_token_hash', 'text', (c) => c.notNull().unique())
    .addColumn('status', 'text', (c) =>
      c.notNull().defaultTo('pending').check(sql`status in ('pending', 'succeeded', 'failed', 'expired')`),
    )
    .addColumn('result_code', 'integer')
    .addColumn('result_desc', 'text')
    .addColumn('mpesa_receipt', 'text', (c) => c.unique())
    .addColumn('created_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
    .addColumn('updated_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
    .addColumn('completed_at', 'timestamptz')
    .execute();
  await db.schema.createIndex('payment_attempts_invoice_idx').on('payment_attempts').column('invoice_id').execute();
  await db.schema
    .createIndex('payment_attempts_pending_idx')
    .on('payment_attempts')
    .column('created_at')
    .where(sql.ref('status'), '=', 'pending')
    .execute();
  // At most one successful attempt per invoice: a second success cannot pay twice.
  await db.schema
    .createIndex('payment_attempts_one_success_per_invoice')
    .on('payment_attempts')
    .column('invoice_id')
    .unique()
    .where(sql.ref('status'), '=', 'succeeded')
    .execute();

  await db.schema
    .createTable('inbound_events')
    .addColumn('id', 'uuid', (c) => c.primaryKey().defaultTo(sql`gen_random_uuid()`))
    .addColumn('source', 'text', (c) =>
      c.notNull().check(sql`source in ('whatsapp_message', 'whatsapp_status', 'whatsapp_payload', 'mpesa_callback', 'sms_report')`),
    )
    // wamid; wamid:status; CheckoutRequestID; AT message id + status; payload hash.
    .addColumn('external_key', 'text', (c) => c.notNull())
    .addColumn('payload', 'jsonb', (c) => c.notNull())
    .addColumn('status', 'text', (c) =>
      c.notNull().defaultTo('received').check(sql`status in ('received', 'processed', 'rejected', 'retrying', 'dead')`),
    )
    .addColumn('attempts', 'integer', (c) => c.notNull().defaultTo(0))
    .addColumn('last_error', 'text')
    .addColumn('received_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
    .addColumn('processed_at', 'timestamptz')
    .addUniqueConstraint('inbound_events_source_key', ['source', 'external_key'])
    .execute();

  await db.schema
    .createTable('outbound_messages')
    .addColumn('id', 'uuid', (c) => c.primaryKey().defaultTo(sql`gen_random_uuid()`))
    .addColumn('recipient', 'text', (c) => c.notNull())
    .addColumn('kind', 'text', (c) => c.notNull())
    .addColumn('content', 'jsonb', (c) => c.notNull())
    .addColumn('invoice_id', 'uuid', (c) => c.references('invoices.id').onDelete('set null'))
    .addColumn('channel', 'text', (c) => c.check(sql`channel in ('whatsapp', 'sms')`))
    .addColumn('status', 'text', (c) =>
      c.notNull().defaultTo('queued').check(sql`status in ('queued', 'sending', 'sent', 'delivered', 'read', 'failed')`),
    )
    .addColumn('provider_message_id', 'text', (c) => c.unique())
    .addColumn('sms_message_id', 'text', (c) => c.unique())
    .addColumn('attempts', 'integer', (c) => c.notNull().defaultTo(0))
    .addColumn('last_error', 'text')
    // Set once when the message falls back to SMS: a message falls back at most once.
    .addColumn('fallback_reason', 'text')
    .addColumn('fell_back_at', 'timestamptz')
    .addColumn('created_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
    .addColumn('updated_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
    .execute();
  await db.schema.createIndex('outbound_messages_status_idx').on('outbound_messages').columns(['status', 'created_at']).execute();

  await db.schema
    .createTable('invoice_events')
    .addColumn('id', 'bigint', (c) => c.primaryKey().generatedAlwaysAsIdentity())
    .addColumn('invoice_id', 'uuid', (c) => c.notNull().references('invoices.id').onDelete('cascade'))
    // Who: 'merchant:<phone>', 'customer:<phone>', 'mpesa', 'system'.
    .addColumn('actor', 'text', (c) => c.notNull())
    .addColumn('type', 'text', (c) => c.notNull())
    .addColumn('data', 'jsonb', (c) => c.notNull().defaultTo(sql`'{}'::jsonb`))
    .addColumn('created_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
    .execute();
  await db.schema.createIndex('invoice_events_invoice_idx').on('invoice_events').columns(['invoice_id', 'id']).execute();
}

export async function down(db: Kysely<unknown>): Promise<void> {
  for (const table of ['invoice_events', 'outbound_messages', 'inbound_events', 'payment_attempts', 'invoices', 'conversations', 'merchants']) {
    await db.schema.dropTable(table).execute();
  }
}
