/**
 * The conversation's imperative shell. Inside the inbound event's transaction (the sender's
 * conversation row already locked by the inbound path): load the state and the facts the
 * machine needs, run the pure transition, carry out its effects (merchant registration,
 * invoices with gapless per-merchant numbers, audit events, outbox messages), save the state.
 */
import { jsonb, rowsOf } from '../db/json.js';
import { sql, type RawBuilder, type Transaction } from 'kysely';
import { allocateInvoiceNumber } from '../db/repositories/invoices.js';
import type { Database, InvoiceStatus } from '../db/schema.js';
import { converse } from '../domain/conversation/machine.js';
import type { Effect, Language, MachineContext, RecentInvoice } from '../domain/conversation/types.js';
import { DUPLICATE_WINDOW_MS } from '../domain/conversation/types.js';
import { decideCancel, decideRemind, dueDateFor, INVOICE_DUE_DAYS, isOverdue, isUnpaid, nairobiMidnight, nairobiToday } from '../domain/invoice.js';
import type { MessageContent, OutboundDraft } from '../domain/outbound.js';
import { DEFAULT_MAX_AMOUNT, formatAmount, formatInvoiceNumber } from '../domain/parse.js';
import { payButtonId, templateName, texts } from '../domain/texts.js';
import type { CustomerInvoice, InvoiceDetail, InvoiceLine } from '../domain/texts.types.js';
import type { Payments } from '../payments/service.js';
import type { ConversationBatch, ConversationHandler, ConversationMessage, SenderFacts } from './port.js';

type Trx = Transaction<Database>;
type MerchantRow = { id: string; phone: string; business_name: string | null; language: Language };
/** What a turn reads before the machine runs (`language` is null when there is no conversation row). */
type Facts = {
  state: unknown;
  language: Language | null;
  merchant_id: string | null;
  business_name: string | null;
  merchant_language: Language | null;
  is_customer: boolean;
};
const noFacts: Facts = { state: null, language: null, merchant_id: null, business_name: null, merchant_language: null, is_customer: false };

/** A `date` column (or null) as its Nairobi day. */
const dayOf = (value: Date | null): string | null => (value === null ? null : nairobiToday(value));

async function audit(trx: Trx, invoiceId: string, actor: string, type: string, data: Record<string, unknown> = {}): Promise<void> {
  await trx.insertInto('invoice_events').values({ invoice_id: invoiceId, actor, type, data: jsonb(data) }).execute();
}

async function languageOf(trx: Trx, phone: string): Promise<Language> {
  const row = await trx.selectFrom('conversations').select('language').where('phone', '=', phone).executeTakeFirst();
  return row?.language ?? 'en';
}

export type ConversationShellOptions = {
  now?: () => Date;
  maxAmount?: number;
  /** Days from sending to the due date (INVOICE_DUE_DAYS). */
  dueDays?: number;
  payments?: Pick<Payments, 'requestPayment'>;
  /** Creates a single-use dashboard sign-in link for a merchant; absent when the dashboard has no public URL. */
  dashboardLink?: (trx: Trx, merchantId: string) => Promise<string>;
};

export function createConversationHandler(options: ConversationShellOptions = {}): ConversationHandler {
  const now = options.now ?? (() => new Date());
  const maxAmount = options.maxAmount ?? DEFAULT_MAX_AMOUNT;
  const dueDays = options.dueDays ?? INVOICE_DUE_DAYS;

  /**
   * The facts every turn needs, for every sender in `senders` (a relation of phone, state,
   * language: their conversation rows, already locked by the inbound path): the merchant (if
   * any), and whether invoices are addressed to the number.
   */
  function factsOf(senders: RawBuilder<unknown>): RawBuilder<SenderFacts> {
    return sql<SenderFacts>`
      select s.phone, s.state, s.language, m.id as merchant_id, m.business_name, m.language as merchant_language,
        exists (select 1 from invoices i where i.customer_phone = s.phone and i.status in ('pending', 'sent', 'failed')) as is_customer
      from ${senders} as s
      left join merchants m on m.phone = s.phone`;
  }

  /** One round trip for the facts of these senders (no row: no conversation yet). */
  async function loadFacts(trx: Trx, phones: readonly string[]): Promise<readonly SenderFacts[]> {
    const senders = sql`(
      select p.phone, c.state, c.language
      from ${rowsOf('p', phones.map((phone) => ({ phone })), { phone: 'text' })}
      left join conversations c on c.phone = p.phone)`;
    return (await factsOf(senders).execute(trx)).rows;
  }

  /** One turn: the pure transition and its effects. The new state is returned, not saved. */
  async function turn(trx: Trx, message: ConversationMessage, facts: Facts): Promise<{ drafts: OutboundDraft[]; state: unknown }> {
    const phone = message.phone;
    const at = now();
    const conversation = facts.language === null ? undefined : { state: facts.state, language: facts.language };
    let merchant: MerchantRow | undefined =
      facts.merchant_id === null ? undefined : { id: facts.merchant_id, phone, business_name: facts.business_name, language: facts.merchant_language ?? 'en' };
    const recent: RecentInvoice[] =
      merchant === undefined
        ? []
        : (
            await trx
              .selectFrom('invoices')
              .select(['number', 'customer_phone', 'amount', 'status', 'created_at'])
              .where('merchant_id', '=', merchant.id)
              .where('created_at', '>=', new Date(at.getTime() - DUPLICATE_WINDOW_MS))
              .execute()
          ).map((r) => ({ number: r.number, customerPhone: r.customer_phone, amount: Number(r.amount), status: r.status, createdAt: r.created_at }));

    const context: MachineContext = {
      now: at,
      language: conversation?.language ?? 'en',
      isMerchant: merchant?.business_name != null,
      isCustomer: facts.is_customer,
      recentInvoices: recent,
      maxAmount,
      dueDays,
      channel: message.channel ?? 'whatsapp',
    };
    const { state, effects } = converse(conversation?.state ?? { version: 0 }, message.input, context);

    const out: OutboundDraft[] = [];
    let language: Language = context.language;
    const t = () => texts[language];
    const toMe = (content: MessageContent) => out.push({ recipient: phone, kind: 'reply', payload: { message: content } });

    async function findInvoice(number: number, lock = false) {
      if (merchant === undefined) return undefined;
      let query = trx.selectFrom('invoices').selectAll().where('merchant_id', '=', merchant.id).where('number', '=', number);
      if (lock) query = query.forUpdate();
      return query.executeTakeFirst();
    }

    async function sendInvoiceToCustomer(invoice: { id: string; number: number; customer_phone: string; amount: string; description: string; due_date: Date | null }, kind: 'invoice' | 'reminder') {
      const customerLanguage = await languageOf(trx, invoice.customer_phone);
      const ct = texts[customerLanguage];
      const name = merchant?.business_name ?? '';
      const amount = Number(invoice.amount);
      const due = invoice.due_date === null ? nairobiMidnight(dueDateFor(at, dueDays)) : nairobiMidnight(dayOf(invoice.due_date)!);
      const content =
        kind === 'invoice'
          ? ct.invoiceToCustomer(name, invoice.number, amount, invoice.description, due, invoice.customer_phone, invoice.id)
          : ct.reminderToCustomer(name, invoice.number, amount, due, invoice.id);
      out.push({
        recipient: invoice.customer_phone,
        kind,
        invoiceId: invoice.id,
        payload: {
          message: content,
          sms: ct.invoiceToCustomerSms(name, invoice.number, amount, invoice.description, due),
          template: {
            // One layout per template kind: the reminder template takes the due date where the invoice takes the description.
            parameters: [templateName(name), formatInvoiceNumber(invoice.number), formatAmount(amount), kind === 'invoice' ? invoice.description : nairobiToday(due)],
            // Tagged with the invoice's id, as the message's own button: merchants share numbers.
            buttonPayload: payButtonId(invoice.number, invoice.id),
          },
        },
      });
    }

    type CustomerRow = CustomerInvoice & { id: string; status: InvoiceStatus };

    /**
     * The sender's invoices, newest first: the unpaid ones (`number` null), or every one of that
     * number whatever its status (and, with `tag`, only the one whose id begins with it).
     */
    async function customerInvoices(number: number | null, tag?: string): Promise<CustomerRow[]> {
      let query = trx
        .selectFrom('invoices')
        .innerJoin('merchants', 'merchants.id', 'invoices.merchant_id')
        .select(['invoices.id', 'invoices.status', 'merchants.business_name', 'invoices.number', 'invoices.amount', 'invoices.description', 'invoices.due_date'])
        .where('invoices.customer_phone', '=', phone)
        .orderBy('invoices.created_at', 'desc')
        // The list shows 10 rows but says how many there are ("You have 12 ... the first 10").
        .limit(100);
      // A number is looked up among settled invoices too: a tap on a paid (or cancelled) invoice's
      // button must find that invoice, not another merchant's unpaid one of the same number.
      query = number === null ? query.where('invoices.status', 'in', ['pending', 'sent', 'failed']) : query.where('invoices.number', '=', number);
      // The tag is hex from our own button or list row (the machine checked it): the id's first 8 digits.
      if (tag !== undefined) query = query.where(sql<boolean>`left(invoices.id::text, 8) = ${tag}`);
      return (await query.execute()).map((r) => ({
        id: r.id,
        status: r.status,
        merchantName: r.business_name ?? '',
        number: r.number,
        amount: Number(r.amount),
        description: r.description,
        dueDate: r.due_date === null ? null : nairobiMidnight(dayOf(r.due_date)!),
      }));
    }

    /** What a settled invoice's Pay button answers: paid, or cancelled (naming its merchant). */
    const settledReply = (invoice: CustomerRow) =>
      invoice.status === 'cancelled' ? t().invoiceCancelledToCustomer(invoice.merchantName, invoice.number) : t().alreadyPaid(invoice.number);

    /** A prompt for this one invoice (its status read again, locked, by requestPayment). */
    async function pay(invoice: CustomerRow): Promise<void> {
      if (options.payments === undefined) return void toMe(t().customerPayPending(invoice));
      const decision = await options.payments.requestPayment(trx, invoice.id, 'customer');
      if (decision === 'start') toMe(t().promptSent(invoice, phone));
      else if (decision === 'prompt_pending') toMe(t().promptStillPending(invoice.number));
      else if (decision === 'already_paid') toMe(t().alreadyPaid(invoice.number));
      // Cancelled since it was read (the merchant's cancel committed meanwhile).
      else toMe(t().invoiceCancelledToCustomer(invoice.merchantName, invoice.number));
    }

    const apply = async (effect: Effect): Promise<void> => {
      switch (effect.type) {
        case 'reply':
          toMe(effect.message);
          return;
        case 'register_merchant':
          merchant = (await trx
            .insertInto('merchants')
            .values({ phone, business_name: effect.businessName, language })
            .onConflict((oc) => oc.column('phone').doUpdateSet({ business_name: effect.businessName, updated_at: sql`now()` }))
            .returning(['id', 'phone', 'business_name', 'language'])
            .executeTakeFirstOrThrow()) as MerchantRow;
          return;
        case 'set_language':
          language = effect.language;
          await trx.updateTable('conversations').set({ language }).where('phone', '=', phone).execute();
          await trx.updateTable('merchants').set({ language, updated_at: sql`now()` }).where('phone', '=', phone).execute();
          return;
        case 'create_invoice': {
          if (merchant === undefined) return;
          const number = await allocateInvoiceNumber(trx, merchant.id);
          const invoice = await trx
            .insertInto('invoices')
            .values({
              merchant_id: merchant.id,
              number,
              customer_phone: effect.draft.customerPhone,
              amount: effect.draft.amount,
              description: effect.draft.description,
              status: 'sent',
              // The shell's clock, not the database's: the duplicate guard and due dates agree with it.
              created_at: at,
              sent_at: at,
              due_date: dueDateFor(at, dueDays),
            })
            .returningAll()
            .executeTakeFirstOrThrow();
          await audit(trx, invoice.id, `merchant:${phone}`, 'created', { amount: effect.draft.amount, customer: effect.draft.customerPhone });
          await sendInvoiceToCustomer(invoice, 'invoice');
          await audit(trx, invoice.id, 'system', 'sent', {});
          await options.payments?.requestPayment(trx, invoice.id, 'invoice_sent');
          toMe(t().invoiceCreated(invoice.number, invoice.customer_phone, effect.draft.amount));
          return;
        }
        case 'list_invoices': {
          if (merchant === undefined) return;
          const rows = await trx
            .selectFrom('invoices')
            .select(['number', 'customer_phone', 'amount', 'status', 'due_date'])
            .where('merchant_id', '=', merchant.id)
            .orderBy('number', 'desc')
            .limit(10)
            .execute();
          const lines: InvoiceLine[] = rows.map((r) => ({
            number: r.number,
            customerPhone: r.customer_phone,
            amount: Number(r.amount),
            status: r.status,
            overdue: isOverdue(r.status, dayOf(r.due_date), at),
          }));
          toMe(t().invoiceList(lines));
          return;
        }
        case 'show_invoice': {
          const invoice = await findInvoice(effect.number);
          if (invoice === undefined) return void toMe(t().invoiceNotFound(effect.number));
          const attempts = await trx
            .selectFrom('payment_attempts')
            .select(['created_at', 'status', 'result_desc'])
            .where('invoice_id', '=', invoice.id)
            .orderBy('created_at', 'desc')
            .limit(5)
            .execute();
          const detail: InvoiceDetail = {
            number: invoice.number,
            customerPhone: invoice.customer_phone,
            amount: Number(invoice.amount),
            status: invoice.status,
            overdue: isOverdue(invoice.status, dayOf(invoice.due_date), at),
            description: invoice.description,
            createdAt: invoice.created_at,
            dueDate: invoice.due_date === null ? null : nairobiMidnight(dayOf(invoice.due_date)!),
            paidAt: invoice.paid_at,
            mpesaReceipt: invoice.mpesa_receipt,
            attempts: attempts.map((a) => ({ at: a.created_at, status: a.status, resultDesc: a.result_desc })),
          };
          toMe(t().invoiceDetail(detail));
          return;
        }
        case 'remind_invoice': {
          const invoice = await findInvoice(effect.number, true);
          if (invoice === undefined) return void toMe(t().invoiceNotFound(effect.number));
          const decision = decideRemind(invoice.status);
          if (!decision.ok) return void toMe(t().cannotRemind(invoice.number, decision.reason));
          await sendInvoiceToCustomer(invoice, 'reminder');
          await audit(trx, invoice.id, `merchant:${phone}`, 'reminded');
          // A new prompt too, unless one may still be on the customer's phone (under 2 minutes
          // old, or a push with no clear answer): the merchant is told which. The invoice is
          // locked and unpaid (decideRemind), so 'start' or 'prompt_pending' are the answers.
          // Without a payment service (a shell built without one) the prompt is promised, as
          // customerPayPending promises it.
          const prompt = options.payments === undefined ? 'start' : await options.payments.requestPayment(trx, invoice.id, 'merchant_remind');
          toMe(t().reminderSent(invoice.number, invoice.customer_phone, prompt === 'start' ? 'new' : 'pending'));
          return;
        }
        case 'cancel_invoice': {
          const invoice = await findInvoice(effect.number, true);
          if (invoice === undefined) return void toMe(t().invoiceNotFound(effect.number));
          const decision = decideCancel(invoice.status);
          if (!decision.ok) return void toMe(t().cannotCancel(invoice.number, decision.reason));
          await trx.updateTable('invoices').set({ status: 'cancelled', cancelled_at: at, updated_at: sql`now()` }).where('id', '=', invoice.id).execute();
          await audit(trx, invoice.id, `merchant:${phone}`, 'cancelled', { previous_status: invoice.status });
          // A prompt not yet sent must not go out for a cancelled invoice.
          await trx
            .updateTable('payment_attempts')
            .set({ status: 'expired', result_desc: 'invoice cancelled', completed_at: sql`now()`, updated_at: sql`now()` })
            .where('invoice_id', '=', invoice.id)
            .where('status', '=', 'pending')
            .where('push_started_at', 'is', null)
            .execute();
          const customerLanguage = await languageOf(trx, invoice.customer_phone);
          out.push({
            recipient: invoice.customer_phone,
            kind: 'notice',
            invoiceId: invoice.id,
            payload: { message: texts[customerLanguage].invoiceCancelledToCustomer(merchant?.business_name ?? '', invoice.number) },
          });
          toMe(t().invoiceCancelled(invoice.number));
          return;
        }
        case 'show_summary': {
          if (merchant === undefined) return;
          const monthStart = `${nairobiToday(at).slice(0, 7)}-01`;
          const row = await trx
            .selectFrom('invoices')
            .select([
              sql<string>`count(*) filter (where status <> 'cancelled')`.as('sent'),
              sql<string>`count(*) filter (where status = 'paid')`.as('paid'),
              sql<string>`coalesce(sum(amount) filter (where status in ('pending', 'sent', 'failed')), 0)`.as('outstanding'),
              sql<string>`coalesce(sum(amount) filter (where status = 'paid' and paid_at >= ${nairobiMidnight(monthStart)}), 0)`.as('collected'),
              sql<string>`count(*) filter (where status in ('pending', 'sent', 'failed') and due_date < ${nairobiToday(at)}::date)`.as('overdue'),
            ])
            .where('merchant_id', '=', merchant.id)
            .executeTakeFirstOrThrow();
          toMe(
            t().summary({
              sent: Number(row.sent),
              paid: Number(row.paid),
              outstandingAmount: Number(row.outstanding),
              collectedThisMonth: Number(row.collected),
              overdue: Number(row.overdue),
            }),
          );
          return;
        }
        case 'customer_pay': {
          if (effect.number === null) {
            const unpaid = await customerInvoices(null);
            const [only] = unpaid;
            if (unpaid.length !== 1 || only === undefined) return void toMe(t().customerInvoices(unpaid));
            return pay(only);
          }
          // Every merchant numbers from INV-0001: a number (typed, or an untagged button sent
          // before buttons carried the tag) may name several of this customer's invoices. It is
          // paid only when it names one unpaid invoice and nothing settled (the button may be
          // that settled invoice's); a tag names exactly one invoice, whatever its status.
          const named = await customerInvoices(effect.number, effect.tag);
          const unpaid = named.filter((invoice) => isUnpaid(invoice.status));
          const settled = named.filter((invoice) => !isUnpaid(invoice.status));
          const [onlyUnpaid] = unpaid;
          const [onlySettled] = settled;
          if (unpaid.length === 1 && settled.length === 0 && onlyUnpaid !== undefined) return pay(onlyUnpaid);
          if (unpaid.length === 0 && settled.length === 1 && onlySettled !== undefined) return void toMe(settledReply(onlySettled));
          // Several of that number, all paid: "already paid" is true of whichever was meant.
          if (unpaid.length === 0 && settled.length > 1 && settled.every((invoice) => invoice.status === 'paid')) return void toMe(t().alreadyPaid(effect.number));
          // Anything else (none of that number, or more than one it could mean): the customer
          // chooses among their unpaid invoices (tagged where they share a number), never a
          // prompt for an invoice they did not name.
          toMe(t().customerInvoices(await customerInvoices(null)));
          return;
        }
        case 'dashboard_link': {
          if (merchant === undefined) return;
          if (options.dashboardLink === undefined) return void toMe(t().dashboardUnavailable());
          toMe(t().dashboardLink(await options.dashboardLink(trx, merchant.id)));
          return;
        }
        case 'customer_help':
          toMe(t().customerInvoices(await customerInvoices(null)));
          return;
      }
    };

    for (const effect of effects) await apply(effect);
    return { drafts: out, state };
  }

  /**
   * Several senders in one transaction. A turn reads the facts as they were when the batch
   * began (as if it ran before the others' turns); its own effects' reads see everything.
   */
  async function prepare(trx: Trx, phones: readonly string[], loaded?: readonly SenderFacts[]): Promise<ConversationBatch> {
    // The rows are this module's own select (factsOf), whoever ran it.
    const rows = (loaded ?? (await loadFacts(trx, phones))) as ReadonlyArray<Facts & { phone: string }>;
    const facts = new Map(rows.map((row) => [row.phone, row]));
    const states: Array<{ phone: string; state: unknown }> = [];
    const saveStatement = () =>
      states.length === 0
        ? undefined
        : sql`
          update conversations c set state = v.state, updated_at = now()
          from ${rowsOf('v', states, { phone: 'text', state: 'jsonb' })}
          where c.phone = v.phone`;
    return {
      async run(message) {
        const result = await turn(trx, message, facts.get(message.phone) ?? noFacts);
        states.push({ phone: message.phone, state: result.state });
        return result.drafts;
      },
      async save() {
        await saveStatement()?.execute(trx);
      },
      saveStatement,
    };
  }

  const one = async (trx: Trx, message: ConversationMessage): Promise<OutboundDraft[]> => {
    const batch = await prepare(trx, [message.phone]);
    const drafts = await batch.run(message);
    await batch.save();
    return drafts;
  };
  return Object.assign(one, { prepare, factsOf });
}

