"""The composition root: one builder per Lambda function, returning that function's ready-built services.

Every function's `app.py` calls its builder once, at init, and keeps what it returns; nothing else in
`shared/cems` or `functions/` builds stores, clients or senders, or reads the environment
(`cems.settings` does, once). Each builder takes the function's `Settings` (read from the process
environment when not given) and asks only for the areas it uses, so a bad value stops that function
at init, naming the variable.

Builders return plain tuples rather than a class per function: creating a class costs time at
import, which every cold start would pay. Imports sit inside the builders on purpose: Lambda cold
start is measured (`make bench`), and a function should load only what it runs: `collect` must not
import the scenario engine, the LINE SDK or the email composer because `trigger` needs them.
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING

from cems.settings import Settings

if TYPE_CHECKING:
    from collections.abc import Mapping

    from aws_lambda_powertools import Logger

    from cems.adapters.aws import DynamoDBClient, SQSClient
    from cems.adapters.dynamodb.customers import Stores
    from cems.adapters.dynamodb.journeys import JourneyStores
    from cems.adapters.line_api import LineReplyApi
    from cems.adapters.sqs import QueueRetry
    from cems.collect import Collector
    from cems.consent import ConsentConfirmations
    from cems.console.actions import OperatorActions
    from cems.console.audience import AudienceCounter
    from cems.console.audience_runs import AudienceRuns
    from cems.console.customers import CustomerDirectory
    from cems.console.operators import Console
    from cems.email.sender import EmailSender
    from cems.engagement.engage import Engagement
    from cems.line.sender import LineSender
    from cems.line.webhook import LineWebhook
    from cems.models import Channel
    from cems.ports import MessageQueue, ScenarioUpkeep
    from cems.scenario.broadcast import BroadcastStarter, BroadcastWorker
    from cems.scenario.loader import ScenarioLoader
    from cems.scenario.relevance import ScenariosInPlay
    from cems.scenario.runner import LinkTracker, ScenarioRunner
    from cems.web.events import WebEvents
    from cems.web.fetch import WebFetch
    from cems.web.sender import WebSender


def _settings(settings: Settings | None) -> Settings:
    return Settings.from_environ() if settings is None else settings


def _dynamodb() -> DynamoDBClient:
    from cems.adapters import aws

    return aws.dynamodb()


def _sqs() -> SQSClient:
    from cems.adapters import aws

    client: SQSClient = aws.client("sqs")
    return client


# ------------------------------------------------------------------------------------------- shared parts


def customer_stores(dynamodb: DynamoDBClient, settings: Settings) -> Stores:
    """Customers, events, the de-duplication ledger and ingest's store over them."""
    from cems.adapters.dynamodb.customers import (
        CustomerStore,
        EventStore,
        IngestStore,
        MessageLedger,
        Stores,
    )

    tables, retention = settings.tables, settings.retention
    customers = CustomerStore(tables.customers, dynamodb)
    events = EventStore(tables.events, dynamodb, timedelta(days=retention.event_days))
    ledger = MessageLedger(tables.idempotency, timedelta(days=retention.dedupe_days))
    return Stores(customers, events, ledger, IngestStore(customers, events, ledger))


def journey_stores(dynamodb: DynamoDBClient, settings: Settings) -> JourneyStores:
    """Scenario versions, enrolments (on the sharded due index, as the store's own model) and cap
    counters: what the loader and the store's tests use."""
    from cems.adapters.dynamodb.journeys import CapStore, EnrolmentStore, JourneyStores, ScenarioStore
    from cems.scenario.config import EngineSettings

    table = settings.tables.journeys
    return JourneyStores(
        ScenarioStore(table, dynamodb),
        EnrolmentStore(table, dynamodb, settings.area(EngineSettings).due_shards),
        CapStore(table, dynamodb),
    )


def line_link_tracker(settings: Settings) -> LinkTracker:
    """Click-tracker URLs for the links of LINE dispatches (the tracking secret is read on the first
    link, not at init): a customer's own dispatch names the customer; a shared (multicast) one, made
    by the dispatch sink from identical content, names only the shared dispatch and its report cell
    (cems.line.links.SharedLinkTracker). URLs written in a text get the short form
    (cems.line.links.ShortLinkTracker): a derived code the dispatch carries with its signed token,
    which send_line stores before it calls LINE."""
    from cems import clock
    from cems.engagement.config import EngagementSettings
    from cems.engagement.tokens import (
        TokenKind,
        TokenSigner,
        TrackingToken,
        click_url,
        short_click_url,
        tracking_expiry,
    )
    from cems.line.dispatch import ShortLink
    from cems.line.links import ShortUrl
    from cems.scenario import engine

    engagement = settings.area(EngagementSettings)
    signer = TokenSigner(engagement.secret)

    def token(dispatch: engine.Dispatch, dispatch_key: str, customer_id: str, url: str) -> TrackingToken:
        return TrackingToken(
            kind=TokenKind.CLICK,
            dispatch_key=dispatch_key,
            customer_id=customer_id,
            channel=dispatch.channel,
            scenario_id=dispatch.scenario_id,
            version=dispatch.version,
            step_id=dispatch.step_id,
            variant=dispatch.variant,
            url=url,
            expires_at=tracking_expiry(clock.now()),
        )

    class ClickTracker:
        def __call__(self, dispatch: engine.Dispatch, url: str) -> str:
            return click_url(
                engagement.base_url, signer, token(dispatch, dispatch.key, dispatch.customer_id, url)
            )

        def shared(self, dispatch: engine.Dispatch, dispatch_key: str, url: str) -> str:
            return click_url(engagement.base_url, signer, token(dispatch, dispatch_key, "", url))

        def short(self, dispatch: engine.Dispatch, dispatch_key: str | None, url: str) -> ShortUrl:
            made = (
                token(dispatch, dispatch.key, dispatch.customer_id, url)
                if dispatch_key is None
                else token(dispatch, dispatch_key, "", url)
            )
            code = signer.short_code(made)
            assert made.expires_at is not None  # tracking_expiry: click tokens always carry one
            return ShortUrl(
                short_click_url(engagement.base_url, code),
                code,
                ShortLink(token=signer.sign(made), expires_at=made.expires_at),
            )

    return ClickTracker()


def runner(dynamodb: DynamoDBClient, sqs: SQSClient, settings: Settings) -> ScenarioRunner:
    """The scenario runner `trigger`, `tick` and `broadcast` share: the journey and customer stores,
    the send queues, the global caps, LINE rich menus (the token is read on first use), LINE link
    tracking, the report counters and the deployment's quiet hours."""
    from cems.adapters.dynamodb.journeys import CapStore, EnrolmentStore, ScenarioStore
    from cems.adapters.dynamodb.report_counters import ReportCounters
    from cems.adapters.line_rich_menus import LineRichMenus
    from cems.adapters.sqs import SqsTimerQueue
    from cems.adapters.sqs_dispatch import QueueDispatchSink
    from cems.channels.registry import plugins
    from cems.line.config import LineSettings
    from cems.scenario.config import EngineSettings
    from cems.scenario.engine import Enrolment
    from cems.scenario.model import ChannelCap, FrequencyCaps
    from cems.scenario.runner import ScenarioRunner

    table = settings.tables.journeys
    stores = customer_stores(dynamodb, settings)
    # Only the caps set are passed, so ChannelCap's own defaults stay the one place they are written.
    caps = {channel: ChannelCap(**limits) for channel, limits in settings.area(EngineSettings).caps().items()}
    return ScenarioRunner(
        ScenarioStore(table, dynamodb),
        # The engine's own Enrolment model, read back as the engine works with it.
        EnrolmentStore(table, dynamodb, settings.area(EngineSettings).due_shards, model=Enrolment),
        CapStore(table, dynamodb),
        stores.customers,
        stores.events,
        QueueDispatchSink(
            sqs,
            # Each registered channel's queue, by the Queues setting its plugin names.
            {p.channel: getattr(settings.queues, p.queue) for p in plugins()},
            links=line_link_tracker(settings),
        ),
        limits=FrequencyCaps.model_validate(caps),
        rich_menus=LineRichMenus(settings.area(LineSettings)),
        counters=ReportCounters(table, dynamodb),
        quiet_hours=settings.area(EngineSettings).quiet(),
        # Only where TIMER_QUEUE_URL is set (trigger, tick, timer): elsewhere the tick's look-ahead,
        # or the tick itself, finds what a journey written there waits for.
        timers=SqsTimerQueue(sqs, settings.queues.timer) if settings.queues.timer else None,
    )


def broadcast_starter(dynamodb: DynamoDBClient, sqs: SQSClient, settings: Settings) -> BroadcastStarter:
    """Starts broadcast runs and date-trigger backfills: segment messages on BroadcastQueue."""
    from cems.adapters.dynamodb.broadcasts import BroadcastStore
    from cems.adapters.dynamodb.journeys import ScenarioStore
    from cems.adapters.dynamodb.table_size import DynamoTableSize
    from cems.adapters.sqs import SqsQueue
    from cems.scenario.broadcast import BroadcastStarter
    from cems.scenario.config import EngineSettings

    table = settings.tables.journeys
    engine = settings.area(EngineSettings)
    queue = SqsQueue(sqs, settings.queues.broadcast, "BROADCAST_QUEUE_URL")
    if engine.broadcast_segments is not None:  # a fixed number of segments
        return BroadcastStarter(
            ScenarioStore(table, dynamodb), BroadcastStore(table, dynamodb), queue, engine.broadcast_segments
        )
    # Sized to CustomersTable (DescribeTable), one segment per broadcast_segment_customers items.
    return BroadcastStarter(
        ScenarioStore(table, dynamodb),
        BroadcastStore(table, dynamodb),
        queue,
        engine.broadcast_max_segments,
        sizing=DynamoTableSize(settings.tables.customers, dynamodb),
        segment_customers=engine.broadcast_segment_customers,
    )


# ------------------------------------------------------------------------------------------- per function


def collect(settings: Settings | None = None) -> Collector:
    from cems.adapters.dynamodb.link_nonces import NonceStore
    from cems.adapters.dynamodb.sites import SiteStore
    from cems.collect import Collector
    from cems.ingest import Ingestor
    from cems.line.config import LineSettings
    from cems.sites import SiteDirectory

    settings = _settings(settings)
    dynamodb = _dynamodb()
    stores = customer_stores(dynamodb, settings)
    return Collector(
        SiteDirectory(SiteStore(settings.tables.sites, dynamodb), settings.retention.site_cache_seconds),
        Ingestor(stores.ingest),
        NonceStore(settings.tables.customers, dynamodb),
        settings.area(LineSettings),
        web=lambda: web_fetch(dynamodb, settings),
    )


def web_fetch(dynamodb: DynamoDBClient, settings: Settings) -> WebFetch:
    """The tag's fetch of on-site messages (collect, built on the first fetch): the browser's owner
    and inbox in CustomersTable, tokens signed with the tracking secret (read when one is signed)."""
    from cems.adapters.dynamodb.web_inbox import WebInboxStore
    from cems.engagement.config import EngagementSettings
    from cems.web.fetch import WebFetch
    from cems.web.tokens import WebTokenSigner

    inbox = WebInboxStore(settings.tables.customers, dynamodb)
    return WebFetch(inbox, inbox, WebTokenSigner(settings.area(EngagementSettings).secret))


def web_events(settings: Settings | None = None) -> WebEvents:
    """What the tag reports about on-site messages (engage): token checks, stored events, counters,
    dismissals on the inbox."""
    from cems.adapters.dynamodb.report_counters import ReportCounters
    from cems.adapters.dynamodb.web_inbox import WebInboxStore
    from cems.engagement.config import EngagementSettings
    from cems.ingest import Ingestor
    from cems.web.events import WebEvents
    from cems.web.tokens import WebTokenSigner

    settings = _settings(settings)
    dynamodb = _dynamodb()
    stores = customer_stores(dynamodb, settings)
    return WebEvents(
        WebTokenSigner(settings.area(EngagementSettings).secret),
        Ingestor(stores.ingest),
        stores.customers,
        ReportCounters(settings.tables.journeys, dynamodb),
        WebInboxStore(settings.tables.customers, dynamodb),
    )


def line_webhook(settings: Settings | None = None) -> LineWebhook:
    from cems.adapters.dynamodb.link_nonces import NonceStore
    from cems.ingest import Ingestor
    from cems.line.config import LineSettings
    from cems.line.webhook import LineWebhook

    settings = _settings(settings)
    dynamodb = _dynamodb()
    line = settings.area(LineSettings)
    stores = customer_stores(dynamodb, settings)

    def reply_api() -> LineReplyApi:
        # Made on the first reply: the token costs an SSM read, and the LINE SDK's client is loaded
        # then too (an unfollow or a redelivery replies nothing, so init does not pay for it).
        from cems.adapters.line_api import LineReplyApi
        from cems.line.api import messaging_api

        return LineReplyApi(messaging_api(line))

    return LineWebhook(
        line,
        Ingestor(stores.ingest),
        NonceStore(settings.tables.customers, dynamodb),
        stores.customers,
        reply_api,
    )


def trigger(
    settings: Settings | None = None,
) -> tuple[ScenarioRunner, ConsentConfirmations, ScenariosInPlay]:
    """The runner, the double opt-in confirmations, and which events the scenarios in play can use
    (cems.scenario.relevance: the rest never reach the runner), on the runner's scenario store."""
    from cems.adapters.dynamodb.consent_markers import ConfirmationMarkers
    from cems.adapters.dynamodb.journeys import ScenarioStore
    from cems.consent import ConsentConfirmations
    from cems.engagement.config import EngagementSettings
    from cems.scenario.relevance import ScenariosInPlay

    settings = _settings(settings)
    dynamodb, sqs = _dynamodb(), _sqs()
    consent = ConsentConfirmations(
        customer_stores(dynamodb, settings).customers,
        ConfirmationMarkers(settings.tables.customers, dynamodb),
        sqs,
        settings.queues.email_send,
        shop_name=settings.area(EngagementSettings).shop_name,
    )
    built = runner(dynamodb, sqs, settings)
    # The runner's store: its cache of parsed versions serves both.
    assert isinstance(built.scenarios, ScenarioStore)
    return built, consent, ScenariosInPlay(built.scenarios)


def tick(settings: Settings | None = None) -> tuple[ScenarioRunner, BroadcastStarter]:
    """The runner (due enrolments) and the broadcast starter (runs whose time has come)."""
    settings = _settings(settings)
    dynamodb, sqs = _dynamodb(), _sqs()
    return runner(dynamodb, sqs, settings), broadcast_starter(dynamodb, sqs, settings)


def timer(settings: Settings | None = None) -> ScenarioRunner:
    """The runner, with the timer queue (an early timer is sent again for the rest of its wait)."""
    settings = _settings(settings)
    return runner(_dynamodb(), _sqs(), settings)


def scenario_upkeep(settings: Settings | None = None) -> ScenarioUpkeep:
    """The scenario store's housekeeping (tick: stopped markers of scenarios stopped before them)."""
    from cems.adapters.dynamodb.journeys import ScenarioStore

    return ScenarioStore(_settings(settings).tables.journeys, _dynamodb())


def broadcast(settings: Settings | None = None) -> BroadcastWorker:
    from cems.adapters.dynamodb.audience_runs import DynamoAudienceRunStore
    from cems.adapters.dynamodb.broadcasts import BroadcastStore
    from cems.adapters.dynamodb.customers import CustomerStore
    from cems.adapters.sqs import SqsQueue
    from cems.console.audience_runs import AudienceSegmentCounter
    from cems.scenario.broadcast import BroadcastWorker

    settings = _settings(settings)
    dynamodb, sqs = _dynamodb(), _sqs()
    scenario_runner = runner(dynamodb, sqs, settings)
    customers = CustomerStore(settings.tables.customers, dynamodb)
    queue = SqsQueue(sqs, settings.queues.broadcast, "BROADCAST_QUEUE_URL")
    return BroadcastWorker(
        scenario_runner,
        BroadcastStore(settings.tables.journeys, dynamodb),
        customers,
        queue,
        # Segments of fanned-out audience counts, decided by the runner's own entry decision.
        counts=AudienceSegmentCounter(
            scenario_runner.entrance,
            customers,
            DynamoAudienceRunStore(settings.tables.journeys, dynamodb),
            queue,
        ),
    )


def scenario_loader(settings: Settings | None = None) -> ScenarioLoader:
    from cems.adapters import aws
    from cems.adapters.dynamodb.audit import DynamoAuditStore
    from cems.adapters.dynamodb.journeys import ScenarioStore
    from cems.adapters.s3 import ScenarioFiles
    from cems.audit import AuditLog
    from cems.scenario.loader import ScenarioLoader

    settings = _settings(settings)
    dynamodb = _dynamodb()
    retention = timedelta(days=settings.retention.audit_days)
    return ScenarioLoader(
        ScenarioFiles(aws.client("s3")),
        ScenarioStore(settings.tables.journeys, dynamodb),
        # A date trigger's backfill uses the broadcast fan-out.
        broadcast_starter(dynamodb, _sqs(), settings),
        # Every upload and delete, under S3's principal and address.
        AuditLog(DynamoAuditStore(settings.tables.audit, dynamodb, retention)),
    )


def send_line(logger: Logger, settings: Settings | None = None) -> tuple[LineSender, QueueRetry]:
    """The sender and the retry of a record that must wait (LINE_SEND_QUEUE_URL)."""
    from cems.adapters.dynamodb.customers import CustomerStore
    from cems.adapters.dynamodb.line_deliveries import DeliveryStore
    from cems.adapters.dynamodb.report_counters import ReportCounters
    from cems.adapters.dynamodb.short_links import ShortLinkStore
    from cems.adapters.line_api import LineGateway
    from cems.adapters.sqs import QueueRetry
    from cems.line.api import load_client_modules, messaging_api
    from cems.line.config import LineSettings
    from cems.line.sender import LineSender

    settings = _settings(settings)
    dynamodb = _dynamodb()
    line, tables = settings.area(LineSettings), settings.tables
    # The SDK's modules at init rather than in the first send's time budget.
    load_client_modules()
    sender = LineSender(
        CustomerStore(tables.customers, dynamodb),
        DeliveryStore(tables.deliveries, dynamodb, timedelta(days=settings.retention.delivery_days)),
        # The channel access token is read on the first send, not at init (SSM costs a round trip).
        LineGateway(lambda: messaging_api(line)),
        retry_base_seconds=line.retry_base_seconds,
        counters=ReportCounters(tables.journeys, dynamodb),
        # The short links of texts (issue 13), stored before LINE is called.
        short_links=ShortLinkStore(tables.deliveries, dynamodb),
    )
    return sender, QueueRetry(settings.queues.line_send, logger)


def send_email(logger: Logger, settings: Settings | None = None) -> tuple[EmailSender, QueueRetry]:
    """The sender and the retry of a record SES throttled (EMAIL_SEND_QUEUE_URL)."""
    from cems.adapters import aws
    from cems.adapters.dynamodb.customers import CustomerStore
    from cems.adapters.dynamodb.email_deliveries import DeliveryRecords
    from cems.adapters.dynamodb.report_counters import ReportCounters
    from cems.adapters.dynamodb.suppression import SuppressionStore
    from cems.adapters.ses import SES_CLIENT_CONFIG, SesGateway
    from cems.adapters.sqs import QueueRetry
    from cems.email.compose import SignedLinks
    from cems.email.config import EmailSettings
    from cems.email.dispatch import EmailDispatch
    from cems.email.sender import EmailSender
    from cems.engagement.config import EngagementSettings
    from cems.engagement.tokens import TokenSigner

    settings = _settings(settings)
    dynamodb = _dynamodb()
    email, tables = settings.area(EmailSettings), settings.tables
    # The signing secret is read on the first send, not at init (SSM costs a round trip).
    signer = TokenSigner(settings.area(EngagementSettings).secret)

    def links(dispatch: EmailDispatch) -> SignedLinks:
        return SignedLinks(email.engage_base_url, signer, dispatch)

    sender = EmailSender(
        email,
        CustomerStore(tables.customers, dynamodb),
        SuppressionStore(tables.customers, dynamodb),
        DeliveryRecords(tables.deliveries, dynamodb, timedelta(days=settings.retention.delivery_days)),
        ReportCounters(tables.journeys, dynamodb),
        # The SES client is made on the first send: most of its cost is loading its model.
        SesGateway(lambda: aws.client("sesv2", SES_CLIENT_CONFIG)),
        links,
    )
    return sender, QueueRetry(settings.queues.email_send, logger)


def send_web(logger: Logger, settings: Settings | None = None) -> tuple[WebSender, QueueRetry]:
    """The sender (on-site inbox writes) and the retry of a record that must wait (WEB_SEND_QUEUE_URL)."""
    from cems.adapters.dynamodb.customers import CustomerStore
    from cems.adapters.dynamodb.delivery_claims import DeliveryClaimStore
    from cems.adapters.dynamodb.report_counters import ReportCounters
    from cems.adapters.dynamodb.web_inbox import WebInboxStore
    from cems.adapters.sqs import QueueRetry
    from cems.web.sender import WebSender

    settings = _settings(settings)
    dynamodb = _dynamodb()
    tables = settings.tables
    sender = WebSender(
        CustomerStore(tables.customers, dynamodb),
        DeliveryClaimStore(tables.deliveries, dynamodb, timedelta(days=settings.retention.delivery_days)),
        WebInboxStore(tables.customers, dynamodb),
        ReportCounters(tables.journeys, dynamodb),
    )
    return sender, QueueRetry(settings.queues.web_send, logger)


def _engagement(settings: Settings) -> Engagement:
    from cems.adapters.dynamodb.report_counters import ReportCounters
    from cems.adapters.dynamodb.short_links import ShortLinkStore
    from cems.adapters.dynamodb.suppression import SuppressionStore
    from cems.engagement.config import EngagementSettings
    from cems.engagement.engage import Engagement
    from cems.engagement.tokens import TokenSigner
    from cems.ingest import Ingestor
    from cems.topics import TopicSettings

    dynamodb = _dynamodb()
    tables = settings.tables
    stores = customer_stores(dynamodb, settings)
    return Engagement(
        # The tracking secret is read when a token is first checked (never, for SES events).
        TokenSigner(settings.area(EngagementSettings).secret),
        Ingestor(stores.ingest),
        stores.customers,
        ReportCounters(tables.journeys, dynamodb),
        SuppressionStore(tables.customers, dynamodb),
        # Short links of LINE texts: one GetItem per tap on one (engage only; ses_events never asks).
        ShortLinkStore(tables.deliveries, dynamodb),
        # The preference page's topics (CEMS_TOPICS).
        topics=settings.area(TopicSettings).listed(),
    )


def engage(settings: Settings | None = None) -> tuple[Engagement, str | None]:
    """The engagement rules and the shop's name for the unsubscribe and confirmation pages."""
    from cems.engagement.config import EngagementSettings

    settings = _settings(settings)
    return _engagement(settings), settings.area(EngagementSettings).shop_name


def ses_events(settings: Settings | None = None) -> Engagement:
    """The engagement rules, which apply SES events (suppression, stored events, counted deliveries)."""
    return _engagement(_settings(settings))


def audience(settings: Settings | None = None) -> AudienceCounter:
    """The audience count (admin API): CustomersTable read in parallel Scan segments as a broadcast
    reads it (sized to the table the same way, or CEMS_BROADCAST_SEGMENTS), each customer decided by
    the broadcast's own entry decision over the Journeys table's scenarios and enrolments, and the
    event history where an audience condition counts events. The DynamoDB client's requests are
    counted for the answer (a Lambda invocation serves one request, so the difference is the count's)."""
    from cems.adapters.dynamodb.journeys import EnrolmentStore, ScenarioStore
    from cems.adapters.dynamodb.table_size import DynamoTableSize
    from cems.adapters.request_tally import ClientRequestTally
    from cems.console.audience import AudienceCounter
    from cems.scenario.config import EngineSettings
    from cems.scenario.engine import Enrolment
    from cems.scenario.entrance import Entrance

    settings = _settings(settings)
    dynamodb = _dynamodb()
    engine = settings.area(EngineSettings)
    stores = customer_stores(dynamodb, settings)
    table = settings.tables.journeys
    entrance = Entrance(
        ScenarioStore(table, dynamodb),
        EnrolmentStore(table, dynamodb, engine.due_shards, model=Enrolment),
        stores.events,
    )
    tally = ClientRequestTally(dynamodb)
    if engine.broadcast_segments is not None:  # a fixed number of segments, as the broadcasts have
        return AudienceCounter(stores.customers, entrance, segments=engine.broadcast_segments, tally=tally)
    return AudienceCounter(
        stores.customers,
        entrance,
        sizing=DynamoTableSize(settings.tables.customers, dynamodb),
        segment_customers=engine.broadcast_segment_customers,
        max_segments=engine.broadcast_max_segments,
        tally=tally,
    )


def audience_runs(settings: Settings | None = None) -> AudienceRuns:
    """The audience count of the console and admin API: at once (`audience`) for a CustomersTable up
    to CEMS_AUDIENCE_SYNC_MAX_ITEMS items by its size estimate, else fanned out as a run, one
    BroadcastQueue message per segment, its tallies in JourneysTable (cems.console.audience_runs)."""
    from cems.adapters.dynamodb.audience_runs import DynamoAudienceRunStore
    from cems.adapters.dynamodb.table_size import DynamoTableSize
    from cems.adapters.sqs import SqsQueue
    from cems.console.audience_runs import AudienceRuns
    from cems.console.config import ConsoleSettings

    settings = _settings(settings)
    dynamodb = _dynamodb()
    return AudienceRuns(
        audience(settings),
        DynamoAudienceRunStore(settings.tables.journeys, dynamodb),
        SqsQueue(_sqs(), settings.queues.broadcast, "BROADCAST_QUEUE_URL"),
        DynamoTableSize(settings.tables.customers, dynamodb),
        sync_max_items=settings.area(ConsoleSettings).audience_sync_max_items,
    )


def console(settings: Settings | None = None) -> Console:
    """The console's checks and sign-in: the operators' user pool, the audit log, the address ranges."""
    from cems.adapters import aws
    from cems.adapters.cognito import CognitoOperatorAccounts
    from cems.adapters.dynamodb.audit import DynamoAuditStore
    from cems.audit import AuditLog
    from cems.console.access import SourceAddresses
    from cems.console.config import ConsoleSettings
    from cems.console.operators import Console

    settings = _settings(settings)
    area = settings.area(ConsoleSettings)
    return Console(
        CognitoOperatorAccounts(aws.client("cognito-idp"), area.pool_id, area.client_id),
        AuditLog(
            DynamoAuditStore(
                settings.tables.audit, _dynamodb(), timedelta(days=settings.retention.audit_days)
            )
        ),
        SourceAddresses.parse(area.source_cidrs),
    )


def customer_directory(settings: Settings | None = None) -> CustomerDirectory:
    """Finding, viewing and exporting a customer (admin API, console): reads of the Customers,
    Events and Journeys tables only, each by key or one partition's Query."""
    from cems.adapters.dynamodb.customer_records import CustomerRecordsStore
    from cems.console.customers import CustomerDirectory

    settings = _settings(settings)
    stores = customer_stores(_dynamodb(), settings)
    return CustomerDirectory(CustomerRecordsStore(stores.customers, stores.events, settings.tables.journeys))


def operator_actions(settings: Settings | None = None) -> OperatorActions:
    """What operators do with customers, reports and the audit log (console and admin API), checked
    by role and recorded in the audit log."""
    from cems.adapters import aws
    from cems.adapters.dynamodb.audit import DynamoAuditStore
    from cems.adapters.dynamodb.erasure import CustomerEraser
    from cems.adapters.dynamodb.journeys import ScenarioStore
    from cems.adapters.dynamodb.report_counters import ReportCounters
    from cems.adapters.s3 import ScenarioFiles
    from cems.audit import AuditLog
    from cems.console.actions import OperatorActions
    from cems.console.config import ConsoleSettings
    from cems.reports.report import ReportService

    settings = _settings(settings)
    dynamodb = _dynamodb()
    tables = settings.tables
    scenarios = ScenarioStore(tables.journeys, dynamodb)
    retention = timedelta(days=settings.retention.audit_days)
    counters = ReportCounters(tables.journeys, dynamodb)
    return OperatorActions(
        customer_directory(settings),
        CustomerEraser(tables.customers, tables.events, tables.journeys, dynamodb, counters=counters),
        ReportService(counters, scenarios),
        scenarios,
        AuditLog(DynamoAuditStore(tables.audit, dynamodb, retention)),
        lambda: audience_runs(settings),
        (ScenarioFiles(aws.client("s3")), settings.area(ConsoleSettings).scenario_bucket),
        send_queues=lambda: send_queues(settings),
    )


def send_queues(settings: Settings | None = None) -> Mapping[Channel, MessageQueue]:
    """Each channel's send queue (LineSendQueue, EmailSendQueue: the `Queues` setting its plugin
    names), for the console's test sends. A queue whose URL is not set refuses when sent to."""
    from cems.adapters.sqs import SqsQueue
    from cems.channels.registry import plugins

    settings = _settings(settings)
    sqs = _sqs()
    return {
        p.channel: SqsQueue(sqs, getattr(settings.queues, p.queue), f"{p.queue.upper()}_QUEUE_URL")
        for p in plugins()
    }
