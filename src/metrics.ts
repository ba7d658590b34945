/**
 * Prometheus metrics: one Registry per app instance (tests build several), the process
 * metrics, per-route request duration histograms, and the service's own counters.
 */
import { prometheus } from '@hono/prometheus';
import { Counter, Gauge, Histogram, Registry } from 'prom-client';

export type Metrics = ReturnType<typeof createMetrics>;

export function createMetrics() {
  const registry = new Registry();
  const http = prometheus({ registry, collectDefaultMetrics: true, prefix: 'invoiceiq_' });
  return {
    registry,
    /** Hono middleware recording per-route request duration and counts. */
    httpMiddleware: http.registerMetrics,
    jobsProcessed: new Counter({
      name: 'invoiceiq_jobs_processed_total',
      help: 'Background jobs finished, by queue and outcome',
      labelNames: ['queue', 'outcome'] as const,
      registers: [registry],
    }),
    outboxStuck: new Gauge({
      name: 'invoiceiq_outbound_stuck_messages',
      help: 'Outbound messages found queued or sending for 30+ minutes at the last outbox sweep (delivered again)',
      registers: [registry],
    }),
    paymentsUnsettled: new Gauge({
      name: 'invoiceiq_payment_attempts_unsettled',
      help: 'Payment attempts still pending 30+ minutes after they started, at the last reconciliation run (M-PESA answers no query about them)',
      registers: [registry],
    }),
    inboundStuck: new Gauge({
      name: 'invoiceiq_inbound_stuck_events',
      help: 'Inbound events found waiting for a retry for 2+ hours at the last retry sweep (queued again)',
      registers: [registry],
    }),
    claimsLost: new Counter({
      name: 'invoiceiq_outbound_claims_lost_total',
      help: 'Sends whose outcome came back after another worker had taken the message over (claim timed out mid-send), by step (sent: possibly sent twice)',
      labelNames: ['step'] as const,
      registers: [registry],
    }),
    messagesSent: new Counter({
      name: 'invoiceiq_messages_sent_total',
      help: 'Outbound send attempts, by channel and outcome',
      labelNames: ['channel', 'outcome'] as const,
      registers: [registry],
    }),
    fallbacks: new Counter({
      name: 'invoiceiq_message_fallbacks_total',
      help: 'Messages routed to SMS instead of WhatsApp, by reason',
      labelNames: ['reason'] as const,
      registers: [registry],
    }),
    whatsappPaced: new Counter({
      name: 'invoiceiq_whatsapp_sends_paced_total',
      help: 'WhatsApp sends held back by the send pace (WABA_MAX_SENDS_PER_SECOND): waited for their turn, or deferred (put back for later, no try counted); slowed_down: Meta answered 130429 and the pace halved for a minute',
      labelNames: ['outcome'] as const,
      registers: [registry],
    }),
    deliveryRetries: new Counter({
      name: 'invoiceiq_delivery_retries_total',
      help: 'Deliveries scheduled again after a retryable failure, by channel',
      labelNames: ['channel'] as const,
      registers: [registry],
    }),
    webhookSignatureFailures: new Counter({
      name: 'invoiceiq_webhook_signature_failures_total',
      help: 'Webhook requests refused for their signature, by reason',
      labelNames: ['reason'] as const,
      registers: [registry],
    }),
    inboundEvents: new Counter({
      name: 'invoiceiq_inbound_events_total',
      help: 'Inbound provider events, by source and outcome (processed, duplicate, rejected, retrying, dead, unknown_message: a WhatsApp status about no message of ours, other_number: a change for another number of the Meta app, skipped)',
      labelNames: ['source', 'outcome'] as const,
      registers: [registry],
    }),
    paymentAttempts: new Counter({
      name: 'invoiceiq_payment_attempts_total',
      help: 'M-PESA payment attempt events, by outcome (requested, pushed, succeeded, failed, expired, review, push_retry, push_failed, push_stale: a prompt not sent because it was asked for too long ago)',
      labelNames: ['outcome'] as const,
      registers: [registry],
    }),
    groupCommitSize: new Histogram({
      name: 'invoiceiq_group_commit_size',
      help: 'Items written in one group-commit transaction, by path (whatsapp_message, mpesa_callback)',
      labelNames: ['path'] as const,
      // Callback groups hold up to 256, message groups up to 256.
      buckets: [1, 2, 4, 8, 16, 32, 64, 128, 256],
      registers: [registry],
    }),
    callbacksRejected: new Counter({
      name: 'invoiceiq_mpesa_callbacks_rejected_total',
      help: 'STK callbacks refused, by reason (unknown_token, checkout_mismatch, malformed, ip_not_allowed)',
      labelNames: ['reason'] as const,
      registers: [registry],
    }),
    reconciliations: new Counter({
      name: 'invoiceiq_payment_reconciliations_total',
      help: 'STK queries made by reconciliation, by outcome',
      labelNames: ['outcome'] as const,
      registers: [registry],
    }),
    reminders: new Counter({
      name: 'invoiceiq_reminders_sent_total',
      help: 'Invoice reminders queued, by kind',
      labelNames: ['kind'] as const,
      registers: [registry],
    }),
    httpErrors: new Counter({
      name: 'invoiceiq_http_errors_total',
      help: 'Requests answered with an error, by error code',
      labelNames: ['code'] as const,
      registers: [registry],
    }),
  };
}
