import type { Request } from 'express';
import { cookies, LANG_COOKIE } from './session.js';

export const LOCALES = ['zh-CN', 'en'] as const;
export type Locale = (typeof LOCALES)[number];

const en = {
  'app.name': 'key-portal',
  'nav.keys': 'Keys', 'nav.usage': 'Today', 'nav.audit': 'Audit log',
  'limit.tokens': '{n} tokens', 'limit.liftsAt': 'Suspended: daily limit reached. Back at {at}.', 'limit.adminSuspended': 'Suspended by an admin.',
  'col.failed': 'Failed', 'pager.page': 'Page {page}',
  'admin.keys.title': 'Keys', 'admin.keys.create': 'Create a key', 'admin.keys.createSubmit': 'Create key',
  'admin.keys.createHint': 'A key without an email is a trial key that nobody signs in with; its holder checks it with GET /usage. 0 = unlimited. The expiry is in the portal’s time zone.',
  'admin.keys.dailyLimit': 'Requests per day', 'admin.keys.dailyTokenLimit': 'Tokens per day', 'admin.keys.expiresAt': 'Expires (optional)',
  'admin.keys.email': 'Owner’s email (optional)', 'admin.keys.all': 'All keys', 'admin.keys.anyStatus': 'Any status',
  'admin.keys.search': 'Key id, label or email', 'admin.keys.none': 'No keys match.', 'admin.keys.noOwner': '— (trial key)',
  'admin.keys.created': 'Key created', 'admin.keys.open': 'Open this key', 'admin.keys.back': '← All keys', 'admin.keys.key': 'Key',
  'admin.keys.createdAt': 'created {at} UTC', 'admin.keys.expires': 'expires {at}', 'admin.keys.change': 'Label, limits and expiry',
  'admin.keys.save': 'Save', 'admin.keys.reset': 'Reset today’s usage', 'admin.keys.suspend': 'Suspend', 'admin.keys.resume': 'Resume',
  'admin.keys.revokeWarn': 'Revoking is final: the key stops working at once and is never handed out again. Its usage history stays.',
  'admin.keys.revokeConfirm': 'Yes, revoke this key', 'admin.keys.cancel': 'Cancel', 'admin.keys.history': 'This key’s audit history',
  'admin.keys.done.update': 'Saved.', 'admin.keys.done.suspend': 'The key is suspended.', 'admin.keys.done.resume': 'The key is back.',
  'admin.keys.done.reset': 'Today’s usage no longer counts against the limits.', 'admin.keys.done.revoke': 'The key is revoked.',
  'admin.usage.title': 'Usage today', 'admin.usage.day': '{day} ({tz})', 'admin.usage.none': 'No key has been used today.',
  'admin.audit.title': 'Audit log', 'admin.audit.time': 'Time (UTC)', 'admin.audit.actor': 'Who', 'admin.audit.action': 'Action',
  'admin.audit.details': 'Details', 'admin.audit.none': 'Nothing recorded yet.',
  'nav.home': 'Home', 'nav.register': 'Get a key', 'nav.myKeys': 'My keys', 'nav.admin': 'Admin',
  'nav.users': 'Users', 'nav.pool': 'Key pool', 'nav.signOut': 'Sign out', 'nav.menu': 'Main menu',
  'lang.other': '中文', 'lang.otherCode': 'zh-CN',
  'banner.unreachable': 'CLIProxyAPI cannot be reached right now. New keys wait as pending and go live as soon as it is back.',
  'banner.rejected': 'CLIProxyAPI rejects the portal’s management key, so keys cannot be pushed to it. An admin needs to fix CLIPROXY_MANAGEMENT_KEY.',
  'banner.other': 'There is a problem talking to CLIProxyAPI: {error}',
  'home.title': 'Your own key for the team’s AI proxy',
  'home.lead': 'This portal hands out personal API keys for the shared CLIProxyAPI at {url}. Use your key with Claude Code, Codex or any tool that speaks the OpenAI, Anthropic or Gemini API.',
  'home.step1': 'Get a key with your email address.',
  'home.step2': 'Copy it straight away: the full key is shown only once.',
  'home.step3': 'Sign in with it under “My keys” to see your usage, add keys or revoke them.',
  'home.cta': 'Get a key', 'home.signIn': 'Sign in with a key',
  'home.pool': '{unused} of {total} keys available',
  'register.title': 'Get a key', 'register.email': 'Email', 'register.name': 'Name (optional)',
  'register.label': 'Label (optional, e.g. “work laptop”)', 'register.submit': 'Get my key',
  'register.hasKey': 'Already have a key? Sign in under “My keys” to add another one.',
  'result.title': 'Your new key', 'result.once': 'This is the only time the full key is shown. Copy it now and keep it somewhere safe.',
  'result.copy': 'Copy', 'result.copied': 'Copied',
  'result.pending': 'Activating: the key will work within a few seconds.',
  'result.setup': 'Set up Claude Code', 'result.env': 'Environment variables (shell profile)',
  'result.settings': 'Or in ~/.claude/settings.json', 'result.cli': 'Or as a command-line flag, for one run',
  'result.next': 'Go to my keys', 'result.keyId': 'Key id: {id} (use it when you talk about this key; never share the key itself)',
  'signin.title': 'Sign in with your key', 'signin.key': 'API key', 'signin.submit': 'Sign in',
  'signin.why': 'Your key is your identity here: nobody can see your keys or your usage without one of them.',
  'mykeys.title': 'My keys', 'mykeys.signedInAs': 'Signed in as {email}',
  'mykeys.today': 'Today', 'mykeys.total': 'All time', 'mykeys.requests': 'requests', 'mykeys.tokens': 'tokens',
  'mykeys.revoke': 'Revoke', 'mykeys.add': 'Add a key', 'mykeys.addSubmit': 'Create key',
  'mykeys.noKeys': 'You have no active keys.', 'mykeys.usage': 'Usage',
  'col.key': 'Key', 'col.label': 'Label', 'col.status': 'Status', 'col.limit': 'Daily limit', 'col.today': 'Today',
  'col.total': 'Total', 'col.lastUsed': 'Last used', 'col.user': 'Person', 'col.share': 'Share', 'col.keys': 'Keys',
  'col.requests': 'Requests', 'col.tokens': 'Tokens', 'col.rank': '#',
  'status.active': 'Active', 'status.pending': 'Pending', 'status.suspended': 'Suspended', 'status.revoked': 'Revoked',
  'limit.none': 'No limit', 'limit.requests': '{n} requests', 'never': 'Never',
  'revoke.title': 'Revoke key {id}?', 'revoke.warn': 'Anything that uses this key stops working at once. This cannot be undone.',
  'revoke.confirm': 'Yes, revoke it', 'revoke.cancel': 'Cancel', 'revoke.done': 'Key {id} was revoked.',
  'admin.signin.title': 'Admin sign-in', 'admin.token': 'Admin token', 'admin.signin.submit': 'Sign in',
  'admin.users.title': 'Users', 'admin.summary.users': 'People', 'admin.summary.keys': 'Active keys',
  'admin.summary.requests': 'Requests', 'admin.summary.tokens': 'Tokens', 'admin.leaderboard': 'Leaderboard by tokens',
  'admin.noUsers': 'Nobody has a key yet.', 'admin.users.search': 'Email or name', 'admin.users.searchGo': 'Search',
  'admin.users.noMatch': 'Nobody matches that search.', 'pager.label': 'Pages', 'pager.prev': '← Previous', 'pager.next': 'Next →',
  'pager.of': 'Page {page} of {pages} · {total} in all', 'admin.user.back': '← All users',
  'admin.pool.title': 'Key pool', 'admin.pool.generate': 'Generate keys', 'admin.pool.count': 'How many',
  'admin.pool.unused': 'Unused', 'admin.pool.assigned': 'Assigned', 'admin.pool.retired': 'Retired', 'admin.pool.total': 'Total',
  'admin.pool.done': '{n} keys were generated.', 'admin.pool.preload': 'Unused keys are also live in CLIProxyAPI (preload).',
  'admin.cliproxy': 'CLIProxyAPI', 'admin.cliproxy.ok': 'Connected (version {version})', 'admin.cliproxy.unknown': 'Not contacted yet',
  'chart.byDay': 'Requests by day (last 30 days)', 'chart.byHour': 'Requests by hour (last 48 hours)',
  'chart.byModel': 'Tokens by model', 'chart.empty': 'No usage yet.',
  'error.title': 'Something is not right', 'error.back': 'Back to the start',
  'footer.text': 'key-portal · personal keys for {url}',
  'csv.mine': 'Download my usage (CSV, 90 days)', 'csv.all': 'Download everyone’s usage (CSV, 90 days)',
  'admin.unmanaged': 'Keys the portal does not manage',
  'admin.unmanaged.why': 'Usage of keys in CLIProxyAPI that were not issued here (the operator’s own, another tool’s), by a hash that never reveals them.',
  'admin.unmanaged.open': '(no key: client authentication was off)',
  'admin.usage': 'Usage ingestion', 'admin.usage.line': '{source} · last record {last} ({ago} s ago)',
  'banner.usage': 'Usage is not being recorded: {error}',
} as const;

export type MessageKey = keyof typeof en;

const zh: Record<MessageKey, string> = {
  'app.name': 'key-portal',
  'nav.keys': '密钥', 'nav.usage': '今日用量', 'nav.audit': '审计日志',
  'limit.tokens': '{n} tokens', 'limit.liftsAt': '已暂停：达到每日上限，{at} 恢复。', 'limit.adminSuspended': '已被管理员暂停。',
  'col.failed': '失败', 'pager.page': '第 {page} 页',
  'admin.keys.title': '密钥', 'admin.keys.create': '创建密钥', 'admin.keys.createSubmit': '创建',
  'admin.keys.createHint': '不填邮箱即为试用密钥，无人可用它登录；持有人用 GET /usage 查看用量。0 表示不限。到期时间按门户的时区填写。',
  'admin.keys.dailyLimit': '每日请求数', 'admin.keys.dailyTokenLimit': '每日 tokens', 'admin.keys.expiresAt': '到期时间（可选）',
  'admin.keys.email': '持有人邮箱（可选）', 'admin.keys.all': '全部密钥', 'admin.keys.anyStatus': '任意状态',
  'admin.keys.search': '密钥编号、备注或邮箱', 'admin.keys.none': '没有符合条件的密钥。', 'admin.keys.noOwner': '—（试用密钥）',
  'admin.keys.created': '密钥已创建', 'admin.keys.open': '查看此密钥', 'admin.keys.back': '← 全部密钥', 'admin.keys.key': '密钥',
  'admin.keys.createdAt': '创建于 {at} UTC', 'admin.keys.expires': '{at} 到期', 'admin.keys.change': '备注、上限和到期时间',
  'admin.keys.save': '保存', 'admin.keys.reset': '重置今日用量', 'admin.keys.suspend': '暂停', 'admin.keys.resume': '恢复',
  'admin.keys.revokeWarn': '吊销不可撤回：密钥立即失效，且不会再发给任何人。用量记录保留。',
  'admin.keys.revokeConfirm': '确认吊销此密钥', 'admin.keys.cancel': '取消', 'admin.keys.history': '此密钥的审计记录',
  'admin.keys.done.update': '已保存。', 'admin.keys.done.suspend': '密钥已暂停。', 'admin.keys.done.resume': '密钥已恢复。',
  'admin.keys.done.reset': '今日已用量不再计入上限。', 'admin.keys.done.revoke': '密钥已吊销。',
  'admin.usage.title': '今日用量', 'admin.usage.day': '{day}（{tz}）', 'admin.usage.none': '今天还没有密钥被使用。',
  'admin.audit.title': '审计日志', 'admin.audit.time': '时间 (UTC)', 'admin.audit.actor': '操作者', 'admin.audit.action': '操作',
  'admin.audit.details': '详情', 'admin.audit.none': '暂无记录。',
  'nav.home': '首页', 'nav.register': '申请密钥', 'nav.myKeys': '我的密钥', 'nav.admin': '管理',
  'nav.users': '用户', 'nav.pool': '密钥池', 'nav.signOut': '退出登录', 'nav.menu': '主菜单',
  'lang.other': 'English', 'lang.otherCode': 'en',
  'banner.unreachable': '暂时无法连接 CLIProxyAPI。新密钥会处于“待生效”状态，连接恢复后自动生效。',
  'banner.rejected': 'CLIProxyAPI 拒绝了门户的管理密钥，密钥无法同步。请管理员修正 CLIPROXY_MANAGEMENT_KEY。',
  'banner.other': '与 CLIProxyAPI 通信时出现问题：{error}',
  'home.title': '团队 AI 代理的个人密钥',
  'home.lead': '本门户为共享的 CLIProxyAPI（{url}）发放个人 API 密钥，可用于 Claude Code、Codex 以及任何兼容 OpenAI、Anthropic 或 Gemini 接口的工具。',
  'home.step1': '用你的邮箱申请密钥。',
  'home.step2': '立即复制：完整密钥只显示这一次。',
  'home.step3': '在“我的密钥”中用它登录，查看用量、添加或吊销密钥。',
  'home.cta': '申请密钥', 'home.signIn': '用密钥登录',
  'home.pool': '可用密钥 {unused} / {total}',
  'register.title': '申请密钥', 'register.email': '邮箱', 'register.name': '姓名（可选）',
  'register.label': '备注（可选，如“工作电脑”）', 'register.submit': '获取密钥',
  'register.hasKey': '已经有密钥？请在“我的密钥”中登录后再添加。',
  'result.title': '你的新密钥', 'result.once': '完整密钥只显示这一次，请立即复制并妥善保存。',
  'result.copy': '复制', 'result.copied': '已复制',
  'result.pending': '正在生效：几秒钟后即可使用。',
  'result.setup': '配置 Claude Code', 'result.env': '环境变量（写入 shell 配置文件）',
  'result.settings': '或写入 ~/.claude/settings.json', 'result.cli': '或用命令行参数（仅本次运行）',
  'result.next': '前往我的密钥', 'result.keyId': '密钥编号：{id}（沟通时请说编号，切勿外传密钥本身）',
  'signin.title': '使用密钥登录', 'signin.key': 'API 密钥', 'signin.submit': '登录',
  'signin.why': '密钥就是你的身份：没有你的密钥，任何人都看不到你的密钥和用量。',
  'mykeys.title': '我的密钥', 'mykeys.signedInAs': '当前登录：{email}',
  'mykeys.today': '今日', 'mykeys.total': '累计', 'mykeys.requests': '次请求', 'mykeys.tokens': 'tokens',
  'mykeys.revoke': '吊销', 'mykeys.add': '添加密钥', 'mykeys.addSubmit': '创建密钥',
  'mykeys.noKeys': '你没有可用的密钥。', 'mykeys.usage': '用量',
  'col.key': '密钥', 'col.label': '备注', 'col.status': '状态', 'col.limit': '每日上限', 'col.today': '今日',
  'col.total': '累计', 'col.lastUsed': '最近使用', 'col.user': '用户', 'col.share': '占比', 'col.keys': '密钥数',
  'col.requests': '请求数', 'col.tokens': 'Tokens', 'col.rank': '#',
  'status.active': '正常', 'status.pending': '待生效', 'status.suspended': '已暂停', 'status.revoked': '已吊销',
  'limit.none': '不限', 'limit.requests': '{n} 次请求', 'never': '从未',
  'revoke.title': '吊销密钥 {id}？', 'revoke.warn': '所有使用该密钥的程序将立即失效，且无法恢复。',
  'revoke.confirm': '确认吊销', 'revoke.cancel': '取消', 'revoke.done': '密钥 {id} 已吊销。',
  'admin.signin.title': '管理员登录', 'admin.token': '管理令牌', 'admin.signin.submit': '登录',
  'admin.users.title': '用户', 'admin.summary.users': '用户数', 'admin.summary.keys': '有效密钥',
  'admin.summary.requests': '请求数', 'admin.summary.tokens': 'Tokens', 'admin.leaderboard': 'Token 用量排行',
  'admin.noUsers': '还没有人申请密钥。', 'admin.users.search': '邮箱或姓名', 'admin.users.searchGo': '搜索',
  'admin.users.noMatch': '没有符合搜索条件的用户。', 'pager.label': '分页', 'pager.prev': '← 上一页', 'pager.next': '下一页 →',
  'pager.of': '第 {page} / {pages} 页 · 共 {total} 条', 'admin.user.back': '← 全部用户',
  'admin.pool.title': '密钥池', 'admin.pool.generate': '生成密钥', 'admin.pool.count': '数量',
  'admin.pool.unused': '未使用', 'admin.pool.assigned': '已分配', 'admin.pool.retired': '已作废', 'admin.pool.total': '总数',
  'admin.pool.done': '已生成 {n} 个密钥。', 'admin.pool.preload': '未使用的密钥也已同步到 CLIProxyAPI（预加载）。',
  'admin.cliproxy': 'CLIProxyAPI', 'admin.cliproxy.ok': '已连接（版本 {version}）', 'admin.cliproxy.unknown': '尚未连接',
  'chart.byDay': '近 30 天每日请求', 'chart.byHour': '近 48 小时每小时请求',
  'chart.byModel': '按模型的 Token 用量', 'chart.empty': '暂无用量。',
  'error.title': '出了点问题', 'error.back': '返回首页',
  'footer.text': 'key-portal · {url} 的个人密钥',
  'csv.mine': '下载我的用量（CSV，近 90 天）', 'csv.all': '下载全部用量（CSV，近 90 天）',
  'admin.unmanaged': '非本门户管理的密钥',
  'admin.unmanaged.why': 'CLIProxyAPI 中并非由本门户发放的密钥（运维自用、其他工具的）的用量，以不泄露密钥的哈希标识。',
  'admin.unmanaged.open': '（无密钥：客户端认证当时处于关闭状态）',
  'admin.usage': '用量采集', 'admin.usage.line': '{source} · 最近记录 {last}（{ago} 秒前）',
  'banner.usage': '用量未能记录：{error}',
};

/** Readable messages for the error codes pages show, per language (the API answers in English). */
const errorsZh: Record<string, string> = {
  email_registered: '该邮箱已有密钥。请用其中一个密钥登录后再添加，或联系管理员。',
  rate_limited: '操作过于频繁，请稍后再试。',
  pool_exhausted: '密钥池已用完，请联系管理员生成更多密钥。',
  csrf_failed: '表单已过期或并非来自本站，请刷新页面后重试。',
  unauthorized: '密钥无效或已被吊销。',
  forbidden: '你没有权限执行此操作。',
  not_found: '页面不存在。',
  max_keys_reached: '每人可持有的密钥数量已达上限，请先吊销一个。',
  email_domain_not_allowed: '该邮箱域名不在允许范围内。',
  already_revoked: '该密钥已被吊销。',
  invalid_field: '输入有误：{message}',
  payload_too_large: '提交的内容过大。',
  internal_error: '服务器出了点问题，请稍后再试。',
  storage_unavailable: '门户暂时无法保存更改（磁盘已满或只读），本次操作未生效，请稍后再试。',
};

const dictionaries: Record<Locale, Record<MessageKey, string>> = { en, 'zh-CN': zh };

export type Translate = (key: MessageKey, vars?: Record<string, string | number>) => string;

export function translator(locale: Locale): Translate {
  const dict = dictionaries[locale];
  return (key, vars) => {
    let s: string = dict[key] ?? en[key] ?? key;
    if (vars) for (const [k, v] of Object.entries(vars)) s = s.replaceAll(`{${k}}`, String(v));
    return s;
  };
}

export function errorMessage(locale: Locale, code: string, message: string): string {
  if (locale !== 'zh-CN' || !errorsZh[code]) return message;
  return errorsZh[code]!.replace('{message}', message);
}

/** The language a request gets: the switch's cookie, else Accept-Language (any zh → zh-CN), else English. */
export function pickLocale(req: Request): Locale {
  const chosen = cookies(req)[LANG_COOKIE];
  if (chosen && (LOCALES as readonly string[]).includes(chosen)) return chosen as Locale;
  // Only a browser that names Chinese gets it; no header, or "*", means no preference.
  if (!/zh/i.test(req.get('accept-language') ?? '')) return 'en';
  const accepted = req.acceptsLanguages('zh-CN', 'zh', 'en');
  return typeof accepted === 'string' && accepted.startsWith('zh') ? 'zh-CN' : 'en';
}
