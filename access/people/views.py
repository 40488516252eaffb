"""UI pages for people and personal tokens, and the lockout response."""

from __future__ import annotations

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import views as auth_views
from django.contrib.auth.forms import AuthenticationForm
from django.core.paginator import Paginator
from django.db.models import Count, Q
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_http_methods, require_POST

from access.people import directory, oidc, services, twofactor
from access.people.choices import Role, Source
from access.people.forms import DepartmentForm, DirectoryMappingForm, NewPersonForm, PersonForm, TokenForm
from access.people.models import Department, DirectoryMapping, PersonalToken, User
from access.people.permissions import ANY_ROLE, role_required, signed_in_user
from console.actions import ServiceError, flash, form_error

PAGE_SIZE = 25


def lockout(request: HttpRequest, credentials: dict | None = None, *args, **kwargs) -> HttpResponse:
    """django-axes calls this once an account/address has too many failed sign-ins."""
    minutes = int(settings.AXES_COOLOFF_TIME.total_seconds() // 60)
    return render(request, "registration/locked.html", {"minutes": minutes}, status=429)


@role_required(Role.ADMIN)
@require_http_methods(["GET", "POST"])
def people(request: HttpRequest) -> HttpResponse:
    form = DepartmentForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            department = services.create_department(**form.cleaned_data)
        except ServiceError as exc:
            form_error(form, exc)
        else:
            messages.success(request, f"Department “{department.name}” created.")
            return redirect("people")
    users = User.objects.select_related("department").order_by("username")
    q, role, dept = request.GET.get("q", "").strip(), request.GET.get("role", ""), request.GET.get("department", "")
    if q:
        users = users.filter(
            Q(username__icontains=q) | Q(first_name__icontains=q) | Q(last_name__icontains=q) | Q(email__icontains=q)
        )
    if role in Role.values:
        users = users.filter(role=role)
    if dept:
        users = users.filter(department__slug=dept)
    page = Paginator(users, PAGE_SIZE).get_page(request.GET.get("page"))
    departments = Department.objects.annotate(member_count=Count("members")).order_by("name")
    status = 400 if request.method == "POST" else 200
    return render(
        request,
        "access/people/people.html",
        {
            "page": page,
            "departments": departments,
            "form": form,
            "roles": Role.choices,
            "q": q,
            "role": role,
            "department": dept,
        },
        status=status,
    )


def _link_shown_once(request: HttpRequest, user: User, path: str) -> dict:
    """The one-time link: e-mailed where SMTP is configured, else shown to the admin this once."""
    url = request.build_absolute_uri(path)
    return {"user": user, "url": None if services.send_link(user, url) else url}


@role_required(Role.ADMIN)
@require_http_methods(["GET", "POST"])
def person_new(request: HttpRequest) -> HttpResponse:
    form = NewPersonForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        path = services.create_person(form.save(commit=False))
        link = _link_shown_once(request, form.instance, path)
        return render(request, "access/people/person_link.html", {"link": link, "created": True}, status=201)
    status = 400 if request.method == "POST" else 200
    context = {"form": form, "email_configured": bool(settings.EMAIL_HOST)}
    return render(request, "access/people/person_new.html", context, status=status)


@role_required(Role.ADMIN)
@require_http_methods(["GET", "POST"])
def person(request: HttpRequest, pk: int) -> HttpResponse:
    """One person: who they are, their role (changed here), what they may call, their keys and tokens."""
    user = get_object_or_404(User.objects.select_related("department"), pk=pk)
    form = PersonForm(request.POST or None, instance=User.objects.get(pk=pk))  # the form edits its own copy
    if request.method == "POST" and form.is_valid():
        try:
            services.check_self_edit(signed_in_user(request), user, form.cleaned_data)
        except ServiceError as exc:
            form_error(form, exc)
        else:
            form.save()  # one user.update event with what changed (access.receivers)
            messages.success(request, f"{user.username} saved.")
            return redirect("person", pk=user.pk)
    department_grants = user.department.grants.prefetch_related("models") if user.department else []
    context = {
        "person": user,
        "form": form,
        "grants": [*user.grants.prefetch_related("models"), *department_grants],
        "keys": user.api_keys.select_related("grant"),
        "tokens": user.tokens.all(),
        "is_self": user.pk == request.user.pk,
        "two_factor": twofactor.enrolled(user),
    }
    return render(request, "access/people/person.html", context, status=400 if request.method == "POST" else 200)


@role_required(Role.ADMIN)
@require_POST
def person_active(request: HttpRequest, pk: int, active: bool) -> HttpResponse:
    user = get_object_or_404(User, pk=pk)
    actor = signed_in_user(request)

    def change() -> None:
        services.check_self_edit(actor, user, {"is_active": active})
        if active:
            services.reactivate(user)
        else:
            services.deactivate(user, f"by {actor.username}")

    done = "reactivated" if active else "deactivated: signed out everywhere, tokens and keys refused"
    flash(request, change, f"{user.username} {done}.")
    return redirect("person", pk=user.pk)


@role_required(Role.ADMIN)
@require_POST
def person_reset_password(request: HttpRequest, pk: int) -> HttpResponse:
    user = get_object_or_404(User, pk=pk)
    try:
        path = services.reset_password(user)
    except ServiceError as exc:
        messages.error(request, exc.message)
        return redirect("person", pk=user.pk)
    link = _link_shown_once(request, user, path)
    return render(request, "access/people/person_link.html", {"link": link, "created": False})


@require_http_methods(["GET", "POST"])
def two_factor(request: HttpRequest) -> HttpResponse:
    """After the password: a code from the authenticator, or a recovery code."""
    if not request.user.is_authenticated:
        return redirect("login")
    if twofactor.pending(request.user, request.session) != twofactor.VERIFY:
        return redirect("home")
    error, status = "", 200
    if request.method == "POST":
        if twofactor.verify(request, request.POST.get("code", "")):
            return redirect("home")  # never to a ?next= from the query: no open redirect
        error, status = "That code is not right, or was used already. Try the current one.", 401
    return render(request, "registration/two_factor.html", {"error": error}, status=status)


@require_http_methods(["GET", "POST"])
def two_factor_setup(request: HttpRequest) -> HttpResponse:
    """Enrol an authenticator (required for admins when FLEET_REQUIRE_ADMIN_2FA is on)."""
    user = request.user
    if not isinstance(user, User):
        return redirect("login")
    if user.source != Source.LOCAL:
        messages.error(request, "Directory accounts use your organisation's own two-factor sign-in.")
        return redirect("home")
    if twofactor.pending(user, request.session) == twofactor.VERIFY:
        return redirect("two-factor")  # replacing an authenticator starts with the current one
    device = twofactor.unconfirmed_device(user)
    error, status = "", 200
    if request.method == "POST":
        codes = twofactor.confirm(request, device, request.POST.get("code", ""))
        if codes is not None:
            return render(request, "registration/two_factor_codes.html", {"codes": codes}, status=201)
        error, status = "That code does not match; check the time on your phone and try the current one.", 400
    context = {"error": error, "required": twofactor.pending(user, request.session) == twofactor.ENROL}
    return render(
        request, "registration/two_factor_setup.html", context | twofactor.provisioning(device), status=status
    )


@role_required(Role.ADMIN)
@require_POST
def person_reset_two_factor(request: HttpRequest, pk: int) -> HttpResponse:
    user = get_object_or_404(User, pk=pk)
    removed = twofactor.reset(signed_in_user(request), user)
    messages.success(request, f"{user.username}'s two-factor devices removed ({removed}); they were signed out.")
    return redirect("person", pk=user.pk)


class SetPasswordView(auth_views.PasswordResetConfirmView):
    """The one-time link's page: the person chooses their password, then signs in."""

    template_name = "registration/set_password.html"
    success_url = "/login/?password=set"
    post_reset_login = False


@role_required(Role.ADMIN)
@require_http_methods(["GET", "POST"])
def directory_mappings(request: HttpRequest) -> HttpResponse:
    """Which directory groups give which role: applied at every sign-in and by the periodic sync."""
    form = DirectoryMappingForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        mapping = services.create_mapping(**form.cleaned_data)
        messages.success(request, f"Members of {mapping.group} are now {mapping.get_role_display()}.")
        return redirect("directory-mappings")
    mappings = DirectoryMapping.objects.select_related("department")
    context = {
        "form": form,
        "mappings": mappings,
        "enabled": directory.enabled(),
        "server": settings.AUTH_LDAP_SERVER_URI,
        "sync_minutes": settings.FLEET_LDAP_SYNC_MINUTES,
        "people": User.objects.filter(source=Source.LDAP).count(),
    }
    status = 400 if request.method == "POST" else 200
    return render(request, "access/people/directory.html", context, status=status)


@role_required(Role.ADMIN)
@require_POST
def delete_directory_mapping(request: HttpRequest, pk: int) -> HttpResponse:
    mapping = get_object_or_404(DirectoryMapping, pk=pk)
    services.delete_mapping(mapping)
    messages.success(request, f"{mapping.group} no longer gives a role.")
    return redirect("directory-mappings")


@role_required(*ANY_ROLE)
@require_http_methods(["GET", "POST"])
def tokens(request: HttpRequest) -> HttpResponse:
    form = TokenForm(request.POST or None)
    created = None
    status = 200
    if request.method == "POST":
        if form.is_valid():
            try:
                token, plaintext = services.create_token(signed_in_user(request), **form.cleaned_data)
            except ServiceError as exc:
                form.add_error(None, exc.message)
                status = 400
            else:
                created = {"token": token, "plaintext": plaintext}
                form = TokenForm()
                status = 201
        else:
            status = 400
    user = signed_in_user(request)
    rows = PersonalToken.objects.filter(user=user)
    context = {"form": form, "tokens": rows, "created": created, "two_factor": twofactor.enrolled(user)}
    return render(request, "access/people/tokens.html", context, status=status)


@role_required(*ANY_ROLE)
@require_POST
def revoke_token(request: HttpRequest, pk: int) -> HttpResponse:
    user = signed_in_user(request)
    token = get_object_or_404(PersonalToken, pk=pk, user=user)
    flash(request, lambda: services.revoke_token(user, token), f"Token “{token.name}” revoked.")
    return redirect("tokens")


class LoginView(auth_views.LoginView):
    """Django's login page, with a button per single sign-on provider; a refused sign-in answers
    401, not 200, so clients can tell."""

    redirect_authenticated_user = True

    def get_context_data(self, **kwargs) -> dict:
        names = [(name, conf["label"]) for name, conf in oidc.providers().items()]
        return super().get_context_data(**kwargs) | {"oidc_providers": names}

    def form_invalid(self, form) -> HttpResponse:
        # Said on screen only where the directory has checked the password: nothing about an
        # account's state leaks to someone guessing.
        why = SHOWN_REFUSALS.get(getattr(self.request, directory.REFUSAL_ATTR, ""), "")
        response = self.render_to_response(self.get_context_data(form=form, refusal=why))
        response.status_code = 401
        return response


class LogoutView(auth_views.LogoutView):
    """Signs out here, then at the single sign-on provider too when it was how the person came in."""

    def post(self, request: HttpRequest, *args, **kwargs) -> HttpResponse:
        provider, id_token = request.session.get(oidc.SESSION_PROVIDER), request.session.get(oidc.SESSION_ID_TOKEN)
        response = super().post(request, *args, **kwargs)
        if provider and id_token:
            url = oidc.logout_url(request, provider, id_token)
            if url:
                return redirect(url)
        return response


@require_http_methods(["GET"])
def oidc_begin(request: HttpRequest, name: str) -> HttpResponse:
    try:
        return oidc.begin(request, name)
    except KeyError:
        raise Http404(f"No single sign-on provider is called {name!r}.") from None
    except (OSError, ValueError) as exc:  # discovery failed: the provider is down or misconfigured
        oidc.refuse(request, name, oidc.Refused(f"the provider did not answer: {exc}"[:200]))
        return _sign_in_refused(request, "The sign-on provider did not answer. Try again, or ask your IT team.", 503)


@require_http_methods(["GET"])
def oidc_callback(request: HttpRequest, name: str) -> HttpResponse:
    if name not in oidc.providers():
        raise Http404(f"No single sign-on provider is called {name!r}.")
    try:
        oidc.finish(request, name)
    except oidc.Refused as refused:
        oidc.refuse(request, name, refused)
        shown = SHOWN_REFUSALS.get(refused.reason, "The sign-on did not complete. Start again from the sign-in page.")
        return _sign_in_refused(request, shown, 401)
    return redirect("home")


def _sign_in_refused(request: HttpRequest, why: str, status: int) -> HttpResponse:
    context = {"form": AuthenticationForm(request), "refusal": why} | {
        "oidc_providers": [(n, c["label"]) for n, c in oidc.providers().items()]
    }
    return render(request, "registration/login.html", context, status=status)


SHOWN_REFUSALS = {
    "in no mapped group": "Your directory account is not in any group that gives access to this console. "
    "Ask your IT administrators to add you to one.",
    "deactivated in the console": "Your account is deactivated. Ask your IT administrators.",
    "an account with this username exists already": "An account of this name exists here already; ask your IT "
    "administrators to link it.",
}
