/**
 * Every error the portal answers with, in one catalogue: its HTTP status and what it says in English
 * and in Chinese. Services throw `fail(code, vars)`; the final middleware answers
 * `{"error":{"code","message"}}` (English: what scripts read) or shows the page in the reader's
 * language. A test checks that every code and every reason has both texts.
 */
type Spec = { status: number; en: string; zh: string };

export const ERRORS = {
  invalid_json: { status: 400, en: 'The request body is not valid JSON.', zh: '请求内容不是有效的 JSON。' },
  invalid_body: { status: 400, en: 'The request body must be a JSON object.', zh: '请求内容必须是一个 JSON 对象。' },
  invalid_field: { status: 400, en: '{field} {reason}.', zh: '{field}{reason}。' },
  metrics_token_required: { status: 401, en: 'Send the admin token or METRICS_TOKEN as Authorization: Bearer.', zh: '请以 Authorization: Bearer 提供管理员令牌或 METRICS_TOKEN。' },
  bad_request: { status: 400, en: 'The request could not be read.', zh: '无法读取该请求。' },
  malformed_path: { status: 400, en: 'The address has an escape (%xx) that is not valid UTF-8.', zh: '地址中含有无效的 UTF-8 转义（%xx）。' },
  unsupported_body: { status: 415, en: 'Send the body as UTF-8 JSON or a form, without an encoding other than gzip, deflate or br.', zh: '请求内容须为 UTF-8 编码的 JSON 或表单，压缩方式仅支持 gzip、deflate 或 br。' },
  confirmation_required: { status: 400, en: 'Tick the box to confirm.', zh: '请勾选确认框。' },
  payload_too_large: { status: 413, en: 'The request body is too large.', zh: '提交的内容过大。' },
  unauthorized: { status: 401, en: 'Missing or invalid credentials.', zh: '缺少凭据或凭据无效。' },
  sign_in_required: { status: 401, en: 'Sign in with one of your keys.', zh: '请用你的一个密钥登录。' },
  key_invalid: { status: 401, en: 'That key is not valid (or was revoked).', zh: '该密钥无效（或已被吊销）。' },
  key_required: { status: 401, en: 'Present your key as "Authorization: Bearer <key>".', zh: '请以 "Authorization: Bearer <密钥>" 的形式提供你的密钥。' },
  admin_token_required: { status: 401, en: 'The admin token is required.', zh: '需要管理令牌。' },
  admin_token_invalid: { status: 401, en: 'That admin token is not valid.', zh: '管理令牌不正确。' },
  authorization_malformed: { status: 401, en: 'The Authorization header must be "Bearer <token>".', zh: 'Authorization 请求头必须是 "Bearer <令牌>"。' },
  forbidden: { status: 403, en: 'You may not do that.', zh: '你没有权限执行此操作。' },
  admin_only: { status: 403, en: 'Only an admin may do that.', zh: '只有管理员可以执行此操作。' },
  not_yours: { status: 403, en: 'That is not yours.', zh: '这不属于你。' },
  trial_key: { status: 403, en: 'A trial key has no owner to sign in as: it reads its own usage with GET /usage.', zh: '试用密钥没有所属用户，无法登录；可用 GET /usage 查看它自己的用量。' },
  own_stats_only: { status: 403, en: 'You may see only your own usage.', zh: '你只能查看自己的用量。' },
  csrf_failed: { status: 403, en: 'This form has expired or did not come from this site. Reload the page and try again.', zh: '表单已过期或并非来自本站，请刷新页面后重试。' },
  email_domain_not_allowed: { status: 403, en: 'Registration is open to {domains} addresses only.', zh: '仅限 {domains} 邮箱注册。' },
  not_found: { status: 404, en: 'There is nothing at this address.', zh: '页面不存在。' },
  key_not_found: { status: 404, en: 'No such key.', zh: '没有这个密钥。' },
  user_not_found: { status: 404, en: 'No such person.', zh: '没有这个用户。' },
  request_not_found: { status: 404, en: 'No such registration request.', zh: '没有这个注册申请。' },
  claim_not_found: { status: 404, en: 'That code does not belong to any request. Check it, or register again.', zh: '该查询码不对应任何申请，请核对后重试，或重新申请。' },
  method_not_allowed: { status: 405, en: 'That method is not allowed here.', zh: '此地址不支持该请求方法。' },
  email_registered: { status: 409, en: 'This email already has a key. Sign in with one of its keys to add another, or ask an admin.', zh: '该邮箱已有密钥。请用其中一个密钥登录后再添加，或联系管理员。' },
  email_taken: { status: 409, en: 'This email already has keys its holder registered. If they are the same person, create the key with same_person: true; if not, revoke those keys first.', zh: '该邮箱已有用户自行注册的密钥。若是同一人，请勾选“同一人”后再创建；若不是，请先吊销那些密钥。' },
  registration_pending: { status: 409, en: 'This email is already waiting for an admin’s approval.', zh: '该邮箱的申请已提交，正在等待管理员批准。' },
  registration_denied: { status: 403, en: 'An admin turned this request down.', zh: '管理员拒绝了这个申请。' },
  registration_claimed: { status: 409, en: 'The key of this request was already shown once. If you did not keep it, ask an admin.', zh: '该申请的密钥已经显示过一次。如未保存，请联系管理员。' },
  registration_decided: { status: 409, en: 'That request was already decided ({status}).', zh: '该申请已处理（{status}）。' },
  max_keys_reached: { status: 409, en: 'Each person may hold at most {max} keys; revoke one first.', zh: '每人最多可持有 {max} 个密钥，请先吊销一个。' },
  key_revoked: { status: 409, en: 'That key is revoked.', zh: '该密钥已被吊销。' },
  over_limit: { status: 409, en: 'This key has used its daily limit. Reset its usage or raise the limit to resume it.', zh: '此密钥今日已达上限。请先重置用量或提高上限再恢复。' },
  rate_limited: { status: 429, en: 'Too many {what}. Try again in {seconds} s.', zh: '{what_zh}过于频繁，请 {seconds} 秒后再试。' },
  too_many_failures: { status: 429, en: 'Too many wrong keys or tokens from this address. Try again in {seconds} s.', zh: '此地址输错密钥或令牌的次数过多，请 {seconds} 秒后再试。' },
  pool_exhausted: { status: 503, en: 'No keys are left in the pool. An admin needs to generate more.', zh: '密钥池已用完，请联系管理员生成更多密钥。' },
  storage_unavailable: { status: 503, en: 'The portal cannot save changes right now (its disk is full or read-only). Nothing was changed; try again later.', zh: '门户暂时无法保存更改（磁盘已满或只读），本次操作未生效，请稍后再试。' },
  internal_error: { status: 500, en: 'Something went wrong on our side. Please try again.', zh: '服务器出了点问题，请稍后再试。' },
} as const satisfies Record<string, Spec>;

export type ErrorCode = keyof typeof ERRORS;

/** Why a field was refused (the `{reason}` of invalid_field). */
export const REASONS = {
  required: { en: 'is required', zh: '为必填项' },
  not_string: { en: 'must be text', zh: '必须是文本' },
  not_number: { en: 'must be a number', zh: '必须是数字' },
  not_whole: { en: 'must be a whole number', zh: '必须是整数' },
  not_boolean: { en: 'must be true or false', zh: '必须是 true 或 false' },
  too_long: { en: 'must be at most {max} characters', zh: '最多 {max} 个字符' },
  at_least: { en: 'must be at least {min}', zh: '不能小于 {min}' },
  at_most: { en: 'must be at most {max}', zh: '不能大于 {max}' },
  email: { en: 'must be a valid email address', zh: '不是有效的邮箱地址' },
  control_chars: { en: 'must not contain control characters', zh: '不能包含控制字符' },
  invisible_chars: { en: 'must not contain invisible or direction-changing characters', zh: '不能包含不可见字符或改变文字方向的字符' },
  key_id: { en: 'must be a key id such as 0042', zh: '必须是 0042 这样的密钥编号' },
  key_or_id: { en: 'or key_id must be given', zh: '或密钥编号必须提供一个' },
  day: { en: 'must be a day such as 2026-11-01', zh: '必须是 2026-11-01 这样的日期' },
  datetime: { en: 'must be a date-time with a zone, such as 2026-12-31T18:00:00+08:00', zh: '必须是带时区的时间，如 2026-12-31T18:00:00+08:00' },
  day_or_datetime: { en: 'must be a day (2026-11-01) or a date-time with a zone', zh: '必须是日期（2026-11-01）或带时区的时间' },
  future: { en: 'must be in the future', zh: '必须是将来的时间' },
  skipped_time: { en: 'does not exist in {zone} (a daylight-saving change skips it)', zh: '在 {zone} 时区中不存在（夏令时调整跳过了这个时间）' },
  one_of: { en: 'must be one of {values}', zh: '必须是以下之一：{values}' },
  once: { en: 'must be given once', zh: '只能提供一次' },
  span: { en: 'may span at most {max} days', zh: '最多跨 {max} 天' },
  order: { en: 'must not be after to', zh: '不能晚于结束日期' },
  cursor: { en: 'must be the cursor a previous page returned', zh: '必须是上一页返回的分页位置' },
  invalid: { en: 'is not valid', zh: '无效' },
  too_many: { en: 'may have at most {max} entries', zh: '最多 {max} 项' },
  model: { en: 'must be model names (or prefixes ending in *) separated by commas', zh: '必须是用逗号分隔的模型名（或以 * 结尾的前缀）' },
  price_pattern: { en: 'must be a model name, or a prefix ending in * (printable characters, * only at the end)', zh: '必须是模型名，或以 * 结尾的前缀（可打印字符，* 只能在末尾）' },
  duplicate: { en: 'lists {pattern} more than once', zh: '中 {pattern} 出现了不止一次' },
  not_listed: { en: 'is not in the price table', zh: '不在价格表中' },
} as const satisfies Record<string, { en: string; zh: string }>;

export type Reason = keyof typeof REASONS;

/** Field names as pages show them in Chinese (the API and English pages use the name itself). */
export const FIELD_NAMES_ZH: Record<string, string> = {
  email: '邮箱', name: '姓名', label: '备注', key: '密钥', key_id: '密钥编号', daily_limit: '每日请求上限',
  daily_token_limit: '每日 token 上限', expires_at: '到期时间', status: '状态', count: '数量', preload: '预加载',
  days: '天数', from: '开始日期', to: '结束日期', model: '模型', granularity: '粒度', failed: '失败',
  limit: '条数', before: '分页位置', action: '操作', token: '令牌', body: '请求内容',
  rpm_limit: '每分钟请求上限', max_concurrency: '并发上限', allowed_models: '可用模型',
  prices: '价格表', pattern: '模型或前缀', input: '输入价格', output: '输出价格', cached: '缓存输入价格', reset: '恢复默认',
};

export type ErrorVars = Record<string, string | number>;

function fill(text: string, vars: ErrorVars | undefined): string {
  if (!vars) return text;
  return text.replace(/\{(\w+)\}/g, (m, k: string) => (vars[k] === undefined ? m : String(vars[k])));
}

/** The one error type: a catalogued code, its status, and what fills its message. */
export class AppError extends Error {
  override name = 'AppError';
  readonly status: number;
  constructor(readonly code: ErrorCode, readonly vars: ErrorVars = {}, readonly headers: Record<string, string> = {}) {
    super(fill(ERRORS[code].en, vars));
    this.status = ERRORS[code].status;
  }

  /** The message in a language ('zh-CN' or English). */
  text(locale: string): string {
    return locale === 'zh-CN' ? fill(ERRORS[this.code].zh, this.vars) : this.message;
  }
}

export const fail = (code: ErrorCode, vars?: ErrorVars, headers?: Record<string, string>) => new AppError(code, vars, headers);

/** invalid_field for `field`, with a catalogued reason (its own vars, e.g. {max}). */
export function invalidField(field: string, reason: Reason, vars: ErrorVars = {}): AppError {
  return new InvalidField(field, reason, vars);
}

class InvalidField extends AppError {
  constructor(readonly field: string, readonly reason: Reason, readonly reasonVars: ErrorVars) {
    super('invalid_field', { field, reason: fill(REASONS[reason].en, reasonVars) });
  }

  override text(locale: string): string {
    if (locale !== 'zh-CN') return this.message;
    return fill(ERRORS.invalid_field.zh, { field: FIELD_NAMES_ZH[this.field] ?? this.field, reason: fill(REASONS[this.reason].zh, this.reasonVars) });
  }
}

/** 401s carry the scheme the client should use. */
export const BEARER = { 'WWW-Authenticate': 'Bearer' };
